"""Train a small Transformer on a task; rerun to resume from the latest checkpoint.

  python train.py --task=dyck --depth=10
  python train.py --task=dyck --depth=10 --steps=20000 --batch_size=256   # paper scale

Every config field has a flag (`--help`). The run directory (default
runs/<task>-k<types>-m<depth>-s<seed>) gets config.json, metrics.jsonl and checkpoints/.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence

from data import code, dyck
from experiments import cli
from pipeline import rundir, tasks, training_run
from models import checkpoints, mesh, training, transformer


def parse(argv: Sequence[str]):
  parser = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--task", default="dyck", help=f"one of: {', '.join(tasks.TASKS)}")
  parser.add_argument("--workdir", default=None, help="run directory (default: under runs/)")
  parser.add_argument("--data_dir", default=os.path.join(rundir.RUNS_ROOT, "tfds"),
                      help="where the TFDS datasets live (default: runs/tfds)")
  cli.add_dataclass_flags(parser, dyck.DyckConfig, skip=("seed",),
                          rename={"max_depth": "depth", "n_types": "types"})
  parser.add_argument("--source", action="append", default=None,
                      help="code: language=directory:pattern, repeatable (default: the Python "
                      "stdlib, /usr/include *.h, /usr/share/perl *.pm)")
  parser.add_argument("--train_language", default="python", help="code: (default: python)")
  parser.add_argument("--max_chars", type=int, default=code.CodeConfig.max_chars,
                      help="code: characters per language (default: 20,000,000)")
  # Model fields left unset take the task's defaults (code: 4 heads, d_model 256).
  cli.add_dataclass_flags(parser, transformer.ModelConfig, skip=("vocab_size", "seq_len"),
                          unset=True)
  cli.add_dataclass_flags(parser, training.TrainConfig, skip=("keep",))
  parser.add_argument("--keep", type=keep_count, default=training.TrainConfig.keep,
                      help="checkpoints kept, the newest; 'all' keeps every one (default: 3)")
  parser.add_argument("--data_seed", type=int, default=0, help="seed of the data (default: 0)")
  return parser.parse_args(argv)


def keep_count(text: str) -> int:
  """'all' -> 0 (every checkpoint), else a count."""
  if text == "all":
    return 0
  try:
    return int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a count or 'all', got {text!r}") from None


def make_task(args: argparse.Namespace):
  if args.task == "dyck":
    return tasks.DyckTask(cli.from_flags(dyck.DyckConfig, args, seed=args.data_seed),
                          args.data_dir)
  try:
    config = code.CodeConfig(sources=tuple(args.source or code.default_sources()),
                             train_language=args.train_language, max_chars=args.max_chars,
                             seed=args.data_seed)
  except code.CorpusError as e:
    raise cli.UsageError(str(e)) from None
  return tasks.CodeTask(config, args.data_dir)


def main(argv: Sequence[str]) -> None:
  args = parse(argv)
  mesh.initialize()  # a multi-process job, if the environment describes one
  cli.check_choice("task", args.task, tasks.TASKS)
  train_cfg = cli.from_flags(training.TrainConfig, args)
  task = make_task(args)
  model_flags = {k: v for k, v in vars(args).items()
                 if k in {f.name for f in dataclasses.fields(transformer.ModelConfig)}
                 and v is not None}
  try:
    model_cfg = task.model_config(**model_flags)
  except ValueError as e:
    raise cli.UsageError(str(e)) from None
  run_dir = args.workdir or training_run.default_run_dir(task, train_cfg)
  cli.ensure_writable(run_dir)
  cli.ensure_writable(args.data_dir)
  _, accuracy = training_run.train(task, model_cfg, train_cfg, run_dir)
  if mesh.is_main():
    print(f"done: iid accuracy {accuracy:.4f} ({task.accuracy_note}); "
          f"evaluate with `python evaluate.py --run={run_dir}`")

if __name__ == "__main__":
  cli.run_main(main, bad_input=(checkpoints.CheckpointError,),
               failures=(training.TrainingError, training.Preempted))
