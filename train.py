"""Train a small Transformer on a task; rerun to resume from the latest checkpoint.

  python train.py --task=dyck --depth=10
  python train.py --task=dyck --depth=10 --steps=20000 --batch_size=256   # paper scale

Every config field has a flag (`--help`). The run directory (default
runs/<task>-k<types>-m<depth>-s<seed>) gets config.json, metrics.jsonl and checkpoints/.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from data import dyck
from experiments import cli, rundir, tasks, training_run
from models import checkpoints, mesh, training, transformer


def parse(argv: Sequence[str]):
  parser = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--task", default="dyck", help=f"one of: {', '.join(tasks.TASKS)}")
  parser.add_argument("--workdir", default=None, help="run directory (default: under runs/)")
  parser.add_argument("--data_dir", default=os.path.join(rundir.RUNS_ROOT, "tfds"),
                      help="where the TFDS datasets live (default: runs/tfds)")
  cli.add_dataclass_flags(parser, dyck.DyckConfig, skip=("seed",),
                          rename={"max_depth": "depth", "n_types": "types"})
  cli.add_dataclass_flags(parser, transformer.ModelConfig, skip=("vocab_size", "seq_len"))
  cli.add_dataclass_flags(parser, training.TrainConfig)
  parser.add_argument("--data_seed", type=int, default=0, help="seed of the data (default: 0)")
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
  args = parse(argv)
  mesh.initialize()  # a multi-process job, if the environment describes one
  cli.check_choice("task", args.task, tasks.TASKS)
  data_cfg = cli.from_flags(dyck.DyckConfig, args, seed=args.data_seed)
  train_cfg = cli.from_flags(training.TrainConfig, args)
  task = tasks.DyckTask(data_cfg, args.data_dir)
  model_cfg = cli.from_flags(transformer.ModelConfig, args, vocab_size=task.vocab.size,
                             seq_len=task.seq_len)
  run_dir = args.workdir or training_run.default_run_dir(task, train_cfg)
  cli.ensure_writable(run_dir)
  cli.ensure_writable(args.data_dir)
  _, accuracy = training_run.train(task, model_cfg, train_cfg, run_dir)
  if mesh.is_main():
    print(f"done: iid accuracy {accuracy:.4f} (Murty positions); "
          f"evaluate with `python evaluate.py --run={run_dir}`")

if __name__ == "__main__":
  cli.run_main(main, bad_input=(checkpoints.CheckpointError,),
               failures=(training.TrainingError, training.Preempted))
