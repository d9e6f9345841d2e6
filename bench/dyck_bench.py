"""Dyck benchmarks, measured side by side in one run.

  python bench/dyck_bench.py                 # every part
  python bench/dyck_bench.py --part=sweep    # only the sweep ratio (about a minute)

Part `train`: seconds for the default Dyck model (`python train.py --task=dyck --depth=10`
defaults) to reach 98 % iid accuracy on Murty positions, on this machine. Training time
excludes the periodic evaluations; wall time includes them.

Part `throughput`: training tokens/s (non-PAD targets) over 200 steps after compilation,
with the default model and batch, on every device of this machine.

Part `sweep`: a rank sweep of the svd proxy evaluated on the iid split as one compiled
program (vmapped over the stacked proxy) against a loop of one jitted call per rank, both
compiled before timing. Prints the ratio loop / sweep, the program's proxy-token
evaluations per second (settings x non-PAD tokens / s), and its achieved FLOP/s from an
analytic count of its matrix products (every trip of the loop over settings counted:
XLA's cost analysis counts a loop body once, which the next line shows for one batch) as a
fraction of this CPU's fp32 peak, the peak's derivation printed. With `--against=COMMIT`,
the sweep's per-setting cost on this checkout's engine and on COMMIT's, each in fresh
processes, alternated (`--rounds`), in the same run.

Part `mfu`: achieved FLOP/s of a training step of a character-sized model (d_model 512,
4 layers, 8 heads, 512 positions, vocabulary 256) in bfloat16 with float32 master weights,
FLOPs counted by XLA's cost analysis; as a fraction of the device's peak where the peak is
known (PEAK_BF16_FLOPS), else the achieved rate alone.

Part `sae`: seconds to fit the `sae` kind's default sweep (k = 1..32, 1,000 Adam steps
each, side by side) on the last layer's head, on 1,000 training strings, compilation
included: what `evaluate.py --proxy=sae` waits for before it evaluates.

Part `scan`: the illusion scan of a trained run (`--run`; `--families`, `--heads`,
`--splits`, controls included) in one process, against the same evaluations as one
evaluate.py process per unit (family or control x head), run one after another: the wall
time of each and the ratio. The processes compute only the rows, not the scan's areas and
flags, so the ratio understates what the one process saves.

Part `factorized`: per setting, a rank-r svd proxy's q, k and attention scores computed
as the engine does (each vector through a [D, D] projector, scores over D) against
factorized scores ((q U)(k U)ᵀ over r), for head widths 8 to 64: what the factorized form
would save where the site vocabulary allowed it.

Part `memory`: peak resident memory of a fresh process that evaluates an svd sweep on 1x
and on 10x the strings (the iid split repeated), side by side; streaming in fixed-shape
batches should keep the ratio near 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

# BENCH_ENGINE_ROOT: another checkout whose engine to import (how --against times an
# older commit's engine with this script's own harness).
sys.path.insert(0, os.environ.get("BENCH_ENGINE_ROOT")
                or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from data import dyck  # noqa: E402
from experiments import cli  # noqa: E402
import proxies  # noqa: E402
from experiments import scan as scan_command  # noqa: E402
from pipeline import api, rundir, scan, tasks  # noqa: E402
from models import mesh, training, transformer  # noqa: E402
from proxies import faithfulness  # noqa: E402


def time_to_accuracy(task, workdir: str, target: float, eval_every: int, steps: int | None):
  """Trains the default model (its schedule stretched to `steps` if given) until `target`."""
  model_cfg = task.model_config()
  cfg = training.TrainConfig(eval_every=eval_every, log_every=eval_every)
  if steps is not None:
    cfg = dataclasses.replace(cfg, steps=steps)
  iid = task.eval_arrays("iid")
  accuracy = tasks.model_accuracy(model_cfg, task.decision(), task.pad_id)
  eval_seconds = [0.0]
  start = time.perf_counter()

  def evaluate(params):
    t = time.perf_counter()
    acc = accuracy(params, iid)
    eval_seconds[0] += time.perf_counter() - t
    return {"iid_accuracy": acc}

  hit = {}

  def stop(row):
    if row.get("iid_accuracy", 0.0) >= target and not hit:
      hit.update(step=row["step"], wall=time.perf_counter() - start)
      return True
    return False

  params = training.train(model_cfg, cfg, workdir, task.pad_id,
                          task.train_batches(cfg.batch_size, cfg.seed), evaluate,
                          log=lambda line: print("   ", line, flush=True), stop=stop)
  if not hit:
    print(f"train: did not reach {target:.0%} iid accuracy within {cfg.steps} steps")
    return params
  train_s = hit["wall"] - eval_seconds[0]
  print(f"train: {target:.0%} iid accuracy at step {hit['step']}: {train_s:.1f} s training, "
        f"{hit['wall']:.1f} s wall including evaluation (default Dyck model, "
        f"{jax.devices()[0].device_kind}, {os.cpu_count()} cores)")
  return params


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
  into a temporary git worktree, removed after), each in fresh processes of this script,
  alternated `rounds` times; the best time of each engine is compared."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  got: dict[str, list[dict]] = {"old": [], "new": []}
  with tempfile.TemporaryDirectory() as tmp:
    tree = os.path.join(tmp, "old-engine")
    subprocess.run(["git", "-C", root, "worktree", "add", "--detach", "--quiet", tree,
                    commit], check=True)
    try:
      for _ in range(rounds):
        for name, engine in (("old", tree), ("new", root)):
          done = subprocess.run(
              [sys.executable, os.path.abspath(__file__), "--part=sweep_engine", *child_flags],
              env={**os.environ, "BENCH_ENGINE_ROOT": engine}, capture_output=True, text=True)
          if done.returncode:
            sys.exit(f"the sweep on the engine at {engine} failed: {done.stderr.strip()}")
          out = json.loads(done.stdout.strip().splitlines()[-1])
          if os.path.realpath(out["engine"]) != os.path.realpath(engine):
            sys.exit(f"the child imported the engine at {out['engine']}, not {engine}")
          got[name].append(out)
    finally:
      subprocess.run(["git", "-C", root, "worktree", "remove", "--force", tree], check=True)
  commit = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", commit], check=True,
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


def train_throughput(task, steps: int = 200):
  model_cfg = task.model_config()
  cfg = training.TrainConfig()
  tx = training.optimizer(cfg)
  m = mesh.data_mesh()
  state = training.initial_state(model_cfg, cfg, m)
  step_fn = training.make_train_step(model_cfg, tx, task.pad_id, m)
  batches = task.train_batches(cfg.batch_size, cfg.seed)
  host = [batches(i) for i in range(steps)]
  for b in {b["inputs"].shape: b for b in host}.values():  # compile every length bucket
    state, loss = step_fn(state, b["inputs"], b["targets"])
  loss.block_until_ready()
  start = time.perf_counter()
  for b in host:
    state, loss = step_fn(state, b["inputs"], b["targets"])
  loss.block_until_ready()
  seconds = time.perf_counter() - start
  tokens = sum(int((b["targets"] != task.pad_id).sum()) for b in host)
  print(f"throughput: training {tokens / seconds:,.0f} tokens/s ({steps} steps of "
        f"{cfg.batch_size} strings, {m.size} device(s), {jax.devices()[0].device_kind})")


# Dense bf16 peak FLOP/s by device kind (vendor figures, without sparsity).
PEAK_BF16_FLOPS = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100": 989e12,
                   "NVIDIA H200": 989e12, "NVIDIA A100-SXM4-80GB": 312e12,
                   "NVIDIA A100-SXM4-40GB": 312e12, "TPU v4": 275e12, "TPU v5 lite": 197e12,
                   "TPU v5e": 197e12, "TPU v5p": 459e12}


def mfu(steps: int = 20, batch_size: int = 32):
  cfg = transformer.ModelConfig(vocab_size=256, seq_len=512, n_layers=4, n_heads=8,
                                d_model=512, d_head=64, d_mlp=2048, dtype="bfloat16")
  train_cfg = training.TrainConfig(batch_size=batch_size)
  m = mesh.data_mesh()
  batch_size = mesh.round_up(batch_size, m)
  state = training.initial_state(cfg, train_cfg, m)
  step_fn = training.make_train_step(cfg, training.optimizer(train_cfg), 0, m)
  tokens = np.random.default_rng(0).integers(1, 256, (batch_size, cfg.seq_len)).astype(np.int32)
  flops = step_fn.lower(state, tokens, tokens).compile().cost_analysis()["flops"]
  state, loss = step_fn(state, tokens, tokens)  # compile outside the timing
  loss.block_until_ready()
  start = time.perf_counter()
  for _ in range(steps):
    state, loss = step_fn(state, tokens, tokens)
  loss.block_until_ready()
  achieved = flops * steps / (time.perf_counter() - start)
  kind = jax.devices()[0].device_kind
  peak = PEAK_BF16_FLOPS.get(kind)
  share = (f"{achieved / (peak * m.size):.1%} of the bf16 peak ({peak * m.size / 1e12:.0f} "
           f"TFLOP/s)" if peak else "peak unknown for this device")
  print(f"mfu: {achieved / 1e12:.2f} TFLOP/s achieved, {share} (d_model 512 char model, "
        f"batch {batch_size} x {cfg.seq_len}, bf16, {m.size} x {kind})")


def memory_child(task, copies: int, ranks, batch_size: int) -> None:
  """Runs in a fresh process: evaluate `copies` x 500 iid strings, print peak RSS (MiB)."""
  model_cfg = task.model_config()
  params = transformer.init_params(model_cfg, 0)
  sweep = api.Run(task, model_cfg, params).fit("svd", ranks, heads=[(1, 0)], n_fit=200).proxy
  program = faithfulness.FaithfulnessProgram(model_cfg, task.decision(), task.pad_id)
  base = {k: v[:500] for k, v in task.eval_arrays("iid").items()}
  arrays = {k: np.concatenate([v] * copies) for k, v in base.items()}
  faithfulness.evaluate(program, params, sweep, arrays, batch_size, task.pad_id)
  print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def memory_ratio(data_dir: str, ranks, batch_size: int) -> None:
  peaks = {}
  for copies in (1, 10):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--part=memory_child",
                          f"--copies={copies}", f"--data_dir={data_dir}",
                          f"--ranks={','.join(map(str, ranks))}", f"--batch_size={batch_size}"],
                         capture_output=True, text=True, check=True)
    peaks[copies] = float(out.stdout.strip().splitlines()[-1])
  print(f"memory: peak RSS evaluating {len(ranks)} ranks on 500 strings {peaks[1]:.0f} MiB, "
        f"on 5,000 strings {peaks[10]:.0f} MiB, ratio {peaks[10] / peaks[1]:.3f}x "
        f"(batches of {batch_size})")


def sae_fit_time(task, model_cfg, params, **options) -> float:
  kind = proxies.KINDS["sae"]
  start = time.perf_counter()
  # The API's default fit: 1000 training strings (all, if fewer), the kind's sweep.
  jax.block_until_ready(api.Run(task, model_cfg, params).fit("sae", **options).proxy)
  seconds = time.perf_counter() - start
  print(f"sae: default sweep k={','.join(map(str, kind.sweep_default))} fitted in "
        f"{seconds:.1f} s ({jax.devices()[0].device_kind})")
  return seconds


def scan_ratio(run_dir: str, families: str, heads: str, splits: str, draws: int) -> None:
  config = scan.ScanConfig(heads=scan_command.heads_list(heads),
                           families=tuple(f for f in families.split(",") if f),
                           splits=tuple(s for s in splits.split(",") if s), draws=draws)
  run = api.load_run(run_dir)
  units = scan.plan(run.task, run.model, config)
  start = time.perf_counter()
  run.scan(config, log=lambda m: None)
  one = time.perf_counter() - start
  evaluate_py = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "evaluate.py")
  start = time.perf_counter()
  for unit in units:
    spec, kind = unit.spec, proxies.KINDS[unit.spec.kind]
    (layer, head), = spec.heads
    flags = [f"--run={run_dir}", f"--proxy={spec.kind}", f"--layer={layer}", f"--head={head}",
             f"--splits={','.join(config.splits)}" if config.splits else None,
             f"--{kind.sweep}={','.join(map(str, spec.values))}" if kind.sweep else None,
             f"--seed={dict(spec.options)['seed']}" if "seed" in kind.options else None,
             f"--fit_split={unit.fit_split}" if unit.fit_split else None]
    done = subprocess.run([sys.executable, evaluate_py, *filter(None, flags)],
                          capture_output=True, text=True)
    if done.returncode:
      sys.exit(f"evaluate.py failed on {unit.stem}: {done.stderr.strip()}")
  processes = time.perf_counter() - start
  print(f"scan: {len(units)} evaluations ({', '.join(config.families or scan.families())}; "
        f"controls included) in one process {one:.1f} s; as {len(units)} evaluate.py "
        f"processes {processes:.1f} s; ratio {processes / one:.2f}x "
        f"({jax.devices()[0].device_kind})")


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--part", choices=("all", "train", "throughput", "mfu", "sweep",
                                         "memory", "memory_child", "scan", "sae",
                                         "sweep_engine", "factorized"),
                      default="all")
  parser.add_argument("--against", default=None,
                      help="with --part=sweep: a commit whose engine the sweep's per-setting "
                      "cost is measured against in the same run (checked out into a "
                      "temporary git worktree, removed after)")
  parser.add_argument("--rounds", type=int, default=2,
                      help="with --against: fresh processes per engine, alternated")
  parser.add_argument("--families", default="svd,kmeans,onehot,weight_svd",
                      help="with --part=scan: the families scanned")
  parser.add_argument("--heads", default="all", help="with --part=scan: 'all' or LAYER.HEAD,...")
  parser.add_argument("--splits", default="iid,seen_struct,unseen_struct_long,unseen_depth,"
                      "long_shallow", help="with --part=scan: the splits")
  parser.add_argument("--draws", type=int, default=3, help="with --part=scan: chance draws")
  parser.add_argument("--copies", type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument("--data_dir", default=os.path.join("runs", "tfds"))
  parser.add_argument("--target", type=float, default=0.98)
  parser.add_argument("--eval_every", type=int, default=250)
  parser.add_argument("--steps", type=int, default=None,
                      help="with --part=train: training steps (default: the default model's "
                      "8,000); the learning-rate schedule follows them")
  parser.add_argument("--ranks", default=",".join(str(r) for r in range(1, 65, 4)))
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batch_size", type=int, default=256, help="evaluation batch size")
  parser.add_argument("--run", default=None,
                      help="with --part=sweep: a trained run whose params to use (default: "
                      "random); with --part=sae too; with --part=scan: the run scanned "
                      "(default: the latest)")
  args = parser.parse_args()

  ranks = [int(r) for r in args.ranks.split(",")]
  if args.part == "factorized":
    return factorized_scores()
  if args.part == "scan":
    try:
      return scan_ratio(args.run or rundir.latest_run(task="dyck"), args.families, args.heads,
                        args.splits, args.draws)
    except cli.BAD_INPUT as e:
      sys.exit(f"{os.path.basename(sys.argv[0])}: error: {e}")
  child_flags = [f"--data_dir={os.path.abspath(args.data_dir)}", f"--ranks={args.ranks}",
                 f"--repeats={args.repeats}", f"--batch_size={args.batch_size}",
                 *([f"--run={os.path.abspath(args.run)}"] if args.run else [])]
  if args.part in ("sweep", "sae", "sweep_engine") and args.run:  # the run's own task, model
    try:
      task, model_cfg, params = tasks.load_trained(args.run)
    except cli.BAD_INPUT as e:
      sys.exit(f"{os.path.basename(sys.argv[0])}: error: {e}")
    if args.part == "sae":
      return sae_fit_time(task, model_cfg, params)
    if args.part == "sweep_engine":
      return engine_child(task, model_cfg, params, ranks, args.repeats, args.batch_size)
    sweep_ratio(task, model_cfg, params, ranks, args.repeats, args.batch_size)
    if args.against:
      engine_comparison(args.against, child_flags, args.rounds)
    return
  task = tasks.DyckTask(dyck.DyckConfig(), args.data_dir)
  task.data  # generate or load the dataset outside any timing
  model_cfg = task.model_config()
  if args.part == "memory_child":
    return memory_child(task, args.copies, ranks, args.batch_size)
  if args.part == "sweep_engine":
    return engine_child(task, model_cfg, transformer.init_params(model_cfg, 0), ranks,
                        args.repeats, args.batch_size)
  if args.part in ("all", "throughput"):
    train_throughput(task)
  if args.part in ("all", "mfu"):
    mfu()
  if args.part in ("all", "memory"):
    memory_ratio(args.data_dir, ranks, args.batch_size)
  if args.part in ("all", "sae"):
    sae_fit_time(task, model_cfg, transformer.init_params(model_cfg, 0))
  if args.part in ("throughput", "mfu", "memory", "sae"):
    return
  with tempfile.TemporaryDirectory() as workdir:
    if args.part in ("all", "train"):
      params = time_to_accuracy(task, workdir, args.target, args.eval_every, args.steps)
    else:
      params = transformer.init_params(task.model_config(), 0)
    if args.part in ("all", "sweep"):
      sweep_ratio(task, model_cfg, params, ranks, args.repeats, args.batch_size)
      if args.against:
        engine_comparison(args.against, child_flags, args.rounds)


if __name__ == "__main__":
  main()
