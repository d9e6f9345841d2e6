"""Every figure an accelerator must show, in one prepared command that fits a short lending.

  python bench/accelerator.py --out=$OUT --run=runs/accel-run     # on the GPU (about 7 min)
  python bench/accelerator.py --dry_run --out=/tmp/accel          # tiny sizes, on any CPU

Prints one line per figure, each naming the device, and writes them all to
<out>/accelerator.json as they come (a part that fails is recorded and the rest go on):
  train       seconds for the default Dyck model to reach 98 % iid accuracy, tokens/s;
  mfu         bf16 training step of the d_model-512 character model: achieved FLOP/s and
              its fraction of the device's bf16 peak;
  sweep       the one-program svd sweep (16 ranks x the iid strings) against a loop of one
              jitted call per rank, every setting side by side; then x10 the strings;
  memory      peak device memory evaluating 1x and 10x the strings (flat is the promise);
  sae         the fit time of the sae kind's default sweep on the run's layer-1 head;
  equality    the sweep's agreements on the carried run's parameters against the CPU's
              (`--reference`, written on a CPU by `--write_reference`), within 1e-4.

What travels: the tree, a trained run small enough to carry (`--run`, e.g. made here by
`python train.py --task=dyck --depth=10 --n_test=500 --workdir=runs/accel-run`) and its
CPU reference. The lent machine has JAX with CUDA, flax, optax and orbax installed; the
other packages this project needs come as wheels: `bench/wheels.sh` fills the ignored
`.whl/` folder here, and the command on the lent machine starts with
`pip install --no-index --find-links=.whl -e . --no-deps && pip install --no-index
--find-links=.whl tensorflow-datasets array-record etils importlib-resources scipy
matplotlib tqdm`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import evaluation_bench  # noqa: E402  (bench/ is on the path: this file's folder)
import sweep_bench  # noqa: E402
import training_bench  # noqa: E402
from data import dyck_splits  # noqa: E402
from pipeline import api, tasks  # noqa: E402
from proxies import faithfulness  # noqa: E402

TINY = dyck_splits.DyckConfig(n_types=4, max_depth=4, max_length=30, n_train=400, n_test=24,
                              short_length=14, ood_depth_cap=8)


def sweep_agreements(task, model_cfg, params, ranks) -> list[float]:
  """Agreement on iid of each rank of the run's layer-1 svd sweep (the equality check)."""
  run = api.Run(task, model_cfg, params)
  result = run.evaluate(run.fit("svd", ranks, n_fit=200), ["iid"], n_bootstrap=10)
  return [r["agreement"] for r in result.rows]


def peak_device_memory(task, model_cfg, params, ranks, copies: int, batch_size: int) -> float:
  """Peak bytes in use on the device (GPU/TPU) after evaluating `copies` x the iid strings;
  on a CPU, which reports no device statistics, the process's peak RSS."""
  sweep = api.Run(task, model_cfg, params).fit("svd", ranks, heads=[(1, 0)], n_fit=200).proxy
  program = faithfulness.FaithfulnessProgram(model_cfg, task.decision(), task.pad_id)
  arrays = {k: np.concatenate([v] * copies) for k, v in task.eval_arrays("iid").items()}
  faithfulness.evaluate(program, params, sweep, arrays, batch_size, task.pad_id)
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return float(stats["peak_bytes_in_use"])
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


class Record:
  """The figures so far, rewritten to <out>/accelerator.json after each part."""

  def __init__(self, out: str):
    os.makedirs(out, exist_ok=True)
    self.path = os.path.join(out, "accelerator.json")
    self.found = {"device": jax.devices()[0].device_kind, "n_devices": jax.device_count(),
                  "backend": jax.default_backend(), "parts": {}}

  def part(self, name: str, fn) -> None:
    start, buffer = time.perf_counter(), io.StringIO()
    try:
      with contextlib.redirect_stdout(buffer):
        value = fn()
      lines = [l for l in buffer.getvalue().splitlines() if not l.startswith("    ")]
      entry = {"lines": lines, **(value or {})}
    except Exception:  # noqa: BLE001  a failed part is recorded, the others still run
      entry = {"error": traceback.format_exc(limit=3)}
    entry["seconds"] = round(time.perf_counter() - start, 2)
    self.found["parts"][name] = entry
    for line in entry.get("lines", []) or [f"{name}: FAILED {entry.get('error', '')}"]:
      print(f"[{self.found['device']}] {line}", flush=True)
    with open(self.path, "w", encoding="utf-8") as f:
      json.dump(self.found, f, indent=1)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="folder for accelerator.json")
  parser.add_argument("--run", default=None, help="a trained Dyck run carried to the device")
  parser.add_argument("--reference", default=None,
                      help="the CPU's agreements for --run (default: <run>/cpu_reference.json)")
  parser.add_argument("--write_reference", action="store_true",
                      help="only write the CPU reference of --run and stop")
  parser.add_argument("--dry_run", action="store_true", help="tiny sizes: checks the script")
  parser.add_argument("--data_dir", default=os.path.join("runs", "tfds"))
  args = parser.parse_args(argv)
  ranks = (1, 2) if args.dry_run else tuple(range(1, 65, 4))
  if args.run:
    task, model_cfg, params = tasks.load_trained(args.run)
  else:
    task = tasks.DyckTask(TINY if args.dry_run else dyck_splits.DyckConfig(), args.data_dir)
    model_cfg = task.model_config(**({"d_model": 16, "d_head": 8, "d_mlp": 32}
                                     if args.dry_run else {}))
    from models import transformer
    params = transformer.init_params(model_cfg, 0)
  reference = args.reference or (os.path.join(args.run, "cpu_reference.json")
                                 if args.run else None)
  if args.write_reference:
    with open(reference, "w", encoding="utf-8") as f:
      json.dump({"ranks": list(ranks), "agreement": sweep_agreements(
          task, model_cfg, params, ranks)}, f)
    print(f"wrote {reference}")
    return

  record = Record(args.out)
  train_task = tasks.DyckTask(TINY if args.dry_run else dyck_splits.DyckConfig(),
                              args.data_dir)
  steps = 20 if args.dry_run else None
  with tempfile.TemporaryDirectory() as workdir:
    record.part("train", lambda: (training_bench.time_to_accuracy(
        train_task, workdir, 0.0 if args.dry_run else 0.98, 10 if args.dry_run else 250,
        steps), None)[1])
  record.part("throughput", lambda: training_bench.train_throughput(
      train_task, steps=5 if args.dry_run else 200))
  record.part("mfu", lambda: training_bench.mfu(steps=2 if args.dry_run else 20,
                                            batch_size=2 if args.dry_run else 32))
  batch = 16 if args.dry_run else 256
  record.part("sweep", lambda: sweep_bench.sweep_ratio(task, model_cfg, params, ranks, 2, batch))
  def memory():
    peaks = {c: peak_device_memory(task, model_cfg, params, ranks, c, batch) for c in (1, 10)}
    n = len(task.eval_arrays("iid")["inputs"])
    print(f"memory: peak {peaks[1] / 2**20:.0f} MiB evaluating {len(ranks)} ranks on {n} "
          f"strings, {peaks[10] / 2**20:.0f} MiB on {10 * n}, ratio {peaks[10] / peaks[1]:.3f}x "
          f"({jax.devices()[0].device_kind})")
    return {f"peak_bytes_{c}x": v for c, v in peaks.items()}
  record.part("memory", memory)
  sae_options = {"width": 64, "steps": 5} if args.dry_run else {}

  def sae_fit():
    return {"fit_seconds": evaluation_bench.sae_fit_time(task, model_cfg, params, **sae_options)}
  record.part("sae", sae_fit)

  def equality():
    if not reference or not os.path.exists(reference):
      print("equality: no CPU reference carried (--reference); skipped")
      return {"skipped": True}
    want = json.load(open(reference, encoding="utf-8"))
    got = sweep_agreements(task, model_cfg, params, want["ranks"])
    worst = float(np.max(np.abs(np.subtract(got, want["agreement"]))))
    print(f"equality: largest agreement difference GPU vs CPU {worst:.2e} over "
          f"{len(got)} ranks ({'within' if worst <= 1e-4 else 'OUTSIDE'} 1e-4)")
    return {"max_abs_difference": worst}
  record.part("equality", equality)
  print(f"wrote {record.path}")


if __name__ == "__main__":
  main()
