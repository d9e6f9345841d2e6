"""Dyck benchmarks, measured side by side in one run.

  python bench/dyck_bench.py                 # both parts
  python bench/dyck_bench.py --part=sweep    # only the sweep ratio (about a minute)

Part `train`: seconds for the default Dyck model (`python train.py --task=dyck --depth=10`
defaults) to reach 98 % iid accuracy on Murty positions, on this machine. Training time
excludes the periodic evaluations; wall time includes them.

Part `sweep`: a rank sweep of the svd proxy evaluated on the iid split as one compiled
program (vmapped over the stacked proxy) against a loop of one jitted call per rank, both
compiled before timing. Prints the ratio loop / sweep.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

import proxies  # noqa: E402
from data import dyck  # noqa: E402
from experiments import tasks  # noqa: E402
from models import training, transformer  # noqa: E402
from proxies import faithfulness  # noqa: E402


def time_to_accuracy(task, workdir: str, target: float, eval_every: int, max_steps: int):
  model_cfg = task.model_config()
  cfg = training.TrainConfig(eval_every=eval_every, log_every=eval_every)
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
    return row["step"] >= max_steps

  params = training.train(model_cfg, cfg, workdir, task.pad_id,
                          task.train_batches(cfg.batch_size, cfg.seed), evaluate,
                          log=lambda line: print("   ", line, flush=True), stop=stop)
  if not hit:
    print(f"train: did not reach {target:.0%} iid accuracy within {max_steps} steps")
    return params
  train_s = hit["wall"] - eval_seconds[0]
  print(f"train: {target:.0%} iid accuracy at step {hit['step']}: {train_s:.1f} s training, "
        f"{hit['wall']:.1f} s wall including evaluation (default Dyck model, "
        f"{jax.devices()[0].device_kind}, {os.cpu_count()} cores)")
  return params


def sweep_ratio(task, params, ranks, repeats: int, batch_size: int):
  model_cfg = task.model_config()
  acts = faithfulness.collect_activations(model_cfg, params, task.fit_inputs(1000),
                                          task.pad_id, 1, 0, ("q", "k"))
  sweep = proxies.fit(proxies.ProxySpec("svd", 1, 0, ("q", "k"), tuple(ranks)), acts)
  singles = [jax.tree_util.tree_map(lambda a, i=i: a[i:i + 1], sweep) for i in range(len(ranks))]
  program = faithfulness.FaithfulnessProgram(model_cfg, task.decision(), task.pad_id)
  arrays = task.eval_arrays("iid")
  run = lambda proxy: faithfulness.evaluate(program, params, proxy, arrays, batch_size,
                                            task.pad_id)
  run(sweep), run(singles[0])  # compile both shapes outside the timing

  def best_of(fn):
    times = []
    for _ in range(repeats):
      t = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t)
    return min(times)

  one_program = best_of(lambda: run(sweep))
  loop = best_of(lambda: [run(p) for p in singles])
  n = len(arrays["inputs"])
  print(f"sweep: {len(ranks)} ranks x {n} iid strings: one compiled program {one_program:.3f} s, "
        f"loop of one jitted call per rank {loop:.3f} s, ratio {loop / one_program:.2f}x "
        f"(best of {repeats}, batches of {batch_size})")


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--part", choices=("all", "train", "sweep"), default="all")
  parser.add_argument("--data_dir", default=os.path.join("runs", "tfds"))
  parser.add_argument("--target", type=float, default=0.98)
  parser.add_argument("--eval_every", type=int, default=250)
  parser.add_argument("--max_steps", type=int, default=20000)
  parser.add_argument("--ranks", default=",".join(str(r) for r in range(1, 65, 4)))
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batch_size", type=int, default=256, help="evaluation batch size")
  parser.add_argument("--run", default=None,
                      help="with --part=sweep: a trained run whose params to use (default: random)")
  args = parser.parse_args()

  task = tasks.DyckTask(dyck.DyckConfig(), args.data_dir)
  task.data  # generate or load the dataset outside any timing
  with tempfile.TemporaryDirectory() as workdir:
    if args.part in ("all", "train"):
      params = time_to_accuracy(task, workdir, args.target, args.eval_every, args.max_steps)
    elif args.run:
      params = training.restore_params(args.run, task.model_config(), training.TrainConfig())
    else:
      params = transformer.init_params(task.model_config(), 0)
    if args.part in ("all", "sweep"):
      sweep_ratio(task, params, [int(r) for r in args.ranks.split(",")], args.repeats,
                  args.batch_size)


if __name__ == "__main__":
  main()
