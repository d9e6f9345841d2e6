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
import os
import sys
import tempfile

# BENCH_ENGINE_ROOT: another checkout whose engine to import (how --against times an
# older commit's engine with this script's own harness; the parts' modules, beside this
# file, are always this checkout's). So the harness may use only engine names that older
# commits have too: the Dyck config as the task registry gives it, not its module.
sys.path.insert(0, os.environ.get("BENCH_ENGINE_ROOT")
                or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import evaluation_bench  # noqa: E402  (bench/ is on the path: this file's folder)
import sweep_bench  # noqa: E402
import training_bench  # noqa: E402
from experiments import cli  # noqa: E402
from models import transformer  # noqa: E402
from pipeline import rundir, tasks  # noqa: E402


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
    return sweep_bench.factorized_scores()
  if args.part == "scan":
    try:
      return evaluation_bench.scan_ratio(args.run or rundir.latest_run(task="dyck"),
                                         args.families, args.heads, args.splits, args.draws)
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
      return evaluation_bench.sae_fit_time(task, model_cfg, params)
    if args.part == "sweep_engine":
      return sweep_bench.engine_child(task, model_cfg, params, ranks, args.repeats, args.batch_size)
    sweep_bench.sweep_ratio(task, model_cfg, params, ranks, args.repeats, args.batch_size)
    if args.against:
      sweep_bench.engine_comparison(args.against, child_flags, args.rounds)
    return
  task = tasks.DyckTask(tasks.kind_of("dyck").config(), args.data_dir)
  task.data  # generate or load the dataset outside any timing
  model_cfg = task.model_config()
  if args.part == "memory_child":
    return evaluation_bench.memory_child(task, args.copies, ranks, args.batch_size)
  if args.part == "sweep_engine":
    return sweep_bench.engine_child(task, model_cfg, transformer.init_params(model_cfg, 0), ranks,
                        args.repeats, args.batch_size)
  if args.part in ("all", "throughput"):
    training_bench.train_throughput(task)
  if args.part in ("all", "mfu"):
    training_bench.mfu()
  if args.part in ("all", "memory"):
    evaluation_bench.memory_ratio(args.data_dir, ranks, args.batch_size)
  if args.part in ("all", "sae"):
    evaluation_bench.sae_fit_time(task, model_cfg, transformer.init_params(model_cfg, 0))
  if args.part in ("throughput", "mfu", "memory", "sae"):
    return
  with tempfile.TemporaryDirectory() as workdir:
    if args.part in ("all", "train"):
      params = training_bench.time_to_accuracy(task, workdir, args.target, args.eval_every,
                                               args.steps)
    else:
      params = transformer.init_params(task.model_config(), 0)
    if args.part in ("all", "sweep"):
      sweep_bench.sweep_ratio(task, model_cfg, params, ranks, args.repeats, args.batch_size)
      if args.against:
        sweep_bench.engine_comparison(args.against, child_flags, args.rounds)


if __name__ == "__main__":
  main()
