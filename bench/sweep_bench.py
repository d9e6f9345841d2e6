"""Sweep parts of the Dyck benchmarks (`dyck_bench.py` says what each measures): the one-program
sweep against a loop, its FLOP/s against this CPU's peak, its per-setting cost against an
older commit's engine, and factorized low-rank scores."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

from pipeline import api
from proxies import faithfulness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The command whose parts these are: the engine comparison's children run through it.
COMMAND = os.path.join(ROOT, "bench", "dyck_bench.py")


def sweep_ratio(task, model_cfg, params, ranks, repeats: int, batch_size: int):
  # Fitted through the API (layer 1's head, its q and k, on 1000 training strings or all if
  # fewer); what is timed is the engine below it: one compiled program against a loop.
  sweep = api.Run(task, model_cfg, params).fit("svd", ranks, heads=[(1, 0)]).proxy
  singles = [jax.tree_util.tree_map(lambda a, i=i: a[i:i + 1], sweep) for i in range(len(ranks))]
  program = faithfulness.FaithfulnessProgram(model_cfg, task.decision(), task.pad_id)
  arrays = task.eval_arrays("iid")
  run = lambda proxy, by_length=True: faithfulness.evaluate(
      program, params, proxy, arrays, batch_size, task.pad_id, by_length=by_length)
  start = time.perf_counter()
  run(sweep)
  first = time.perf_counter() - start
  run(singles[0]), run(sweep, False)  # compile every shape outside the timing

  def best_of(fn):
    times = []
    for _ in range(repeats):
      t = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t)
    return min(times)

  one_program = best_of(lambda: run(sweep))
  loop = best_of(lambda: [run(p) for p in singles])
  unbucketed = best_of(lambda: run(sweep, False))
  n = len(arrays["inputs"])
  tokens = int((arrays["inputs"] != task.pad_id).sum())
  print(f"sweep: {len(ranks)} ranks x {n} iid strings: one compiled program {one_program:.3f} s, "
        f"loop of one jitted call per rank {loop:.3f} s, ratio {loop / one_program:.2f}x "
        f"(best of {repeats}, batches of {batch_size}); "
        f"{len(ranks) * tokens / one_program:,.0f} proxy-token evaluations/s; without length "
        f"buckets (every batch {arrays['inputs'].shape[1]} wide) {unbucketed:.3f} s; first call "
        f"{first:.3f} s ({len(program.shapes)} batch shapes compiled, {jax.devices()[0].device_kind})")
  batches = [b for b, _ in faithfulness.fixed_batches(
      arrays, batch_size, faithfulness.padding(task.pad_id),
      faithfulness.length_ladder(arrays["inputs"].shape[1]))]  # as `evaluate` cuts them
  shapes = [(*b["inputs"].shape, len(program.slots(b)["rows"])) for b in batches]
  flops = sum(svd_sweep_flops(model_cfg, sweep, *shape) for shape in shapes)
  achieved = flops / one_program
  line = (f"sweep FLOPs: {flops / 1e9:.1f} GFLOP analytic (matrix products only, the loop's "
          f"{sweep.size} trips counted, {len(batches)} batches) in {one_program:.3f} s: "
          f"{achieved / 1e9:.1f} GFLOP/s")
  if jax.default_backend() == "cpu":
    peak, derivation = cpu_fp32_peak()
    line += (f", {achieved / peak:.1%} of this CPU's fp32 peak of {peak / 1e9:.0f} GFLOP/s "
             f"({derivation})")
  print(line)
  widest = max(range(len(batches)), key=lambda i: shapes[i][1])
  xla = program.lower(params, sweep, batches[widest]).compile().cost_analysis()["flops"]
  print(f"sweep FLOPs of one {shapes[widest][0]} x {shapes[widest][1]} batch: analytic "
        f"{svd_sweep_flops(model_cfg, sweep, *shapes[widest]) / 1e9:.2f} GFLOP with the "
        f"loop's {sweep.size} trips, {svd_sweep_flops(model_cfg, sweep, *shapes[widest], trips=1) / 1e9:.2f} "
        f"with one; XLA's cost analysis {xla / 1e9:.2f} (a loop body counted once, "
        f"elementwise work included)")


def svd_sweep_flops(cfg, sweep, rows: int, width: int, slots: int, trips: int | None = None
                    ) -> float:
  """FLOPs of matrix products (2 per multiply-add) of one batch of the faithfulness program
  for an svd sweep on the built-in Transformer: the model's run once, then `trips` settings
  (default: every setting of the sweep), each from its first layer on (the layers before,
  that layer's q/k/v projections and LayerNorm come from the model's run), its proxy one
  [D, D] product per simplified head and site. Softmax, LayerNorm, GELU, the JSD and the
  metrics are left out: the count is a lower bound of the work."""
  b, l, t = rows, width, slots
  m, h, d, f, v = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.vocab_size

  def layer(i: int, qkv: bool) -> float:
    positions = t if i == cfg.n_layers - 1 else b * l  # the last block's are read out
    return (qkv * 3 * 2 * b * l * m * h * d + 2 * 2 * b * h * l * l * d
            + 2 * positions * h * d * m + 2 * 2 * positions * m * f)

  model = sum(layer(i, True) for i in range(cfg.n_layers)) + 2 * t * m * v
  first = sweep.first_layer
  setting = (len(sweep.heads) * len(sweep.sites) * 2 * b * l * d * d + layer(first, False)
             + sum(layer(i, True) for i in range(first + 1, cfg.n_layers)) + 2 * t * m * v)
  return model + (sweep.size if trips is None else trips) * setting


def cpu_fp32_peak() -> tuple[float, str]:
  """(fp32 FLOP/s, how it was derived) of the CPUs this process may run on, from
  /proc/cpuinfo: cores x clock x FMA units x fp32 lanes per vector x 2 (an FMA is two
  FLOPs). Assumed, where cpuinfo cannot say: 2 FMA units per core with AVX-512 (a Xeon
  Scalable Gold/Platinum core; some parts have 1), 2 with AVX2 FMA, and the listed clock
  (no turbo, which a VM does not report)."""
  with open("/proc/cpuinfo", encoding="utf-8") as f:
    info = f.read()
  flags = set(re.search(r"^flags\s*:(.*)$", info, re.M).group(1).split())
  mhz = max(float(x) for x in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M))
  cores = len(os.sched_getaffinity(0))
  if "avx512f" in flags:
    lanes, units, isa = 16, 2, "AVX-512"
  elif {"avx2", "fma"} <= flags:
    lanes, units, isa = 8, 2, "AVX2 FMA"
  else:
    lanes, units, isa = 4, 1, "SSE, no FMA"
  peak = cores * mhz * 1e6 * units * lanes * 2
  return peak, (f"{cores} cores x {mhz / 1e3:.2f} GHz x {units} FMA units x {lanes} fp32 "
                f"lanes ({isa}) x 2; FMA units assumed, clock as listed")


def engine_child(task, model_cfg, params, ranks, repeats: int, batch_size: int) -> None:
  """Runs in a fresh process, on the engine BENCH_ENGINE_ROOT names (or this checkout's):
  the svd sweep over the iid split with every setting and with its first alone, best of
  `repeats` each, both compiled first; prints one JSON line."""
  sweep = api.Run(task, model_cfg, params).fit("svd", ranks, heads=[(1, 0)]).proxy
  one = jax.tree_util.tree_map(lambda a: a[:1], sweep)
  program = faithfulness.FaithfulnessProgram(model_cfg, task.decision(), task.pad_id)
  arrays = task.eval_arrays("iid")
  run = lambda proxy: faithfulness.evaluate(program, params, proxy, arrays, batch_size,
                                            task.pad_id)
  sums = run(sweep).sequence  # compiles every shape
  run(one)
  times = {"all": [], "one": []}
  for _ in range(repeats):
    for name, proxy in (("all", sweep), ("one", one)):
      start = time.perf_counter()
      run(proxy)
      times[name].append(time.perf_counter() - start)
  per_setting = lambda k, n: (sums[k].sum(-1) / sums[n].sum()).tolist()
  print(json.dumps({"engine": os.path.dirname(os.path.dirname(faithfulness.__file__)),
                    "all": min(times["all"]), "one": min(times["one"]),
                    "settings": sweep.size, "agreement": per_setting("agree", "n_scored"),
                    "tv": per_setting("tv", "n_scored"),
                    "attention_jsd": per_setting("attention_jsd", "n_query")}))


def engine_comparison(commit: str, child_flags: list[str], rounds: int) -> None:
  """The sweep's per-setting cost on this checkout's engine and on `commit`'s (checked out
  into a temporary git worktree, removed after), each in fresh processes of the command,
  alternated `rounds` times; the best time of each engine is compared."""
  got: dict[str, list[dict]] = {"old": [], "new": []}
  with tempfile.TemporaryDirectory() as tmp:
    tree = os.path.join(tmp, "old-engine")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "--quiet", tree,
                    commit], check=True)
    try:
      for _ in range(rounds):
        for name, engine in (("old", tree), ("new", ROOT)):
          done = subprocess.run(
              [sys.executable, COMMAND, "--part=sweep_engine", *child_flags],
              env={**os.environ, "BENCH_ENGINE_ROOT": engine}, capture_output=True, text=True)
          if done.returncode:
            sys.exit(f"the sweep on the engine at {engine} failed: {done.stderr.strip()}")
          out = json.loads(done.stdout.strip().splitlines()[-1])
          if os.path.realpath(out["engine"]) != os.path.realpath(engine):
            sys.exit(f"the child imported the engine at {out['engine']}, not {engine}")
          got[name].append(out)
    finally:
      subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree], check=True)
  commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", commit], check=True,
                          capture_output=True, text=True).stdout.strip()
  p = got["new"][0]["settings"]
  best = {k: {t: min(o[t] for o in v) for t in ("all", "one")} for k, v in got.items()}
  per = {k: (v["all"] - v["one"]) / (p - 1) for k, v in best.items()}
  whole = {k: v["all"] / p for k, v in best.items()}
  drift = {m: max(abs(a - b) for a, b in zip(got["old"][0][m], got["new"][0][m]))
           for m in ("agreement", "tv", "attention_jsd")}
  print(f"sweep per setting: engine of {commit} {per['old'] * 1e3:.1f} ms, this one "
        f"{per['new'] * 1e3:.1f} ms, ratio {per['old'] / per['new']:.2f}x ((the {p} settings "
        f"- the first alone) / {p - 1}, best of {rounds} alternated processes each); the "
        f"whole sweep / {p}: {whole['old'] * 1e3:.1f} ms against {whole['new'] * 1e3:.1f} ms, "
        f"ratio {whole['old'] / whole['new']:.2f}x; the engines' agreement, TV and JSD differ "
        f"by at most {drift['agreement']:.1e}, {drift['tv']:.1e}, {drift['attention_jsd']:.1e} "
        f"({jax.devices()[0].device_kind})")


def factorized_scores(rows: int = 256, width: int = 64, settings: int = 16,
                      repeats: int = 5) -> None:
  """Per setting, a rank-r svd proxy's q/k and attention scores computed as the engine does
  (q' = q P, k' = k P with P = U Uᵀ [D, D], then q' k'ᵀ) against factorized ((q U)(k U)ᵀ,
  U [D, r]), for head widths D of 8 to 64 and ranks r up to D: a loop of `settings`
  settings in one compiled program, as the sweep runs them, best of `repeats`."""
  key = jax.random.key(0)
  for d in (8, 16, 32, 64):
    q_BxLxD, k_BxLxD = jax.random.normal(key, (2, rows, width, d))
    cells = []
    for r in sorted({1, 4, d // 2, d}):
      u_PxDxR = jnp.linalg.qr(jax.random.normal(key, (settings, d, d)))[0][..., :r]
      projector_PxDxD = u_PxDxR @ jnp.swapaxes(u_PxDxR, 1, 2)
      projected = jax.jit(lambda p_s: jax.lax.map(
          lambda p: jnp.einsum("bqd,bkd->bqk", q_BxLxD @ p, k_BxLxD @ p).sum(), p_s))
      factorized = jax.jit(lambda u_s: jax.lax.map(
          lambda u: jnp.einsum("bqr,bkr->bqk", q_BxLxD @ u, k_BxLxD @ u).sum(), u_s))
      seconds = []
      for fn, arg in ((projected, projector_PxDxD), (factorized, u_PxDxR)):
        fn(arg).block_until_ready()
        times = []
        for _ in range(repeats):
          start = time.perf_counter()
          fn(arg).block_until_ready()
          times.append(time.perf_counter() - start)
        seconds.append(min(times) / settings)
      cells.append(f"r={r} {seconds[0] * 1e3:.2f} / {seconds[1] * 1e3:.2f} ms")
    print(f"factorized: D={d}, {rows} x {width} batch, per setting projected / factorized: "
          f"{'; '.join(cells)} ({jax.devices()[0].device_kind})")
