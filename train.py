"""Train a small Transformer on a task; rerun to resume from the latest checkpoint.

  python train.py --task=dyck --depth=10
  python train.py --task=dyck --depth=10 --steps=20000 --batch_size=256   # paper scale

Every config field has a flag (`--help`); a task's own flags are read off the task registry
(`pipeline.tasks`). The run directory (default runs/<the task's run name>, e.g.
runs/dyck-k20-m10-s0) gets config.json, metrics.jsonl and checkpoints/.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence

from experiments import cli
from pipeline import rundir, tasks, training_run
from models import checkpoints, mesh, training, transformer


def parse(argv: Sequence[str]):
  parser = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--task", default="dyck", help=f"one of: {', '.join(tasks.TASKS)}")
  parser.add_argument("--workdir", default=None, help="run directory (default: under runs/)")
  parser.add_argument("--data_dir", default=os.path.join(rundir.RUNS_ROOT, "tfds"),
                      help="where the TFDS datasets live (default: runs/tfds)")
  add_task_flags(parser)
  # Model fields left unset take the task's defaults (`Task.model_config`).
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


TASK_FLAG = "task_flag_"  # where a task flag's value is parsed to, apart from the others


def add_task_flags(parser: argparse.ArgumentParser) -> None:
  """A flag for every registered task's data config flag (--depth, --source, ...), read off
  the registry; a name several tasks use is one flag. Each defaults to None, "not given",
  so that a flag of another task is an error and a field not given keeps its default."""
  users: dict[str, list[tuple[tasks.TaskKind, tasks.Flag]]] = {}
  for kind in tasks.TASKS.values():
    for flag in kind.flags:
      users.setdefault(flag.name, []).append((kind, flag))
  for name, pairs in users.items():
    flag = pairs[0][1]
    parser.add_argument(f"--{name}", dest=TASK_FLAG + name, metavar=name.upper(),
                        type=flag.type, default=None, action="append" if flag.repeat else "store",
                        help="; ".join(f"{kind.name}: {f.help}" for kind, f in pairs))


def make_task(args: argparse.Namespace) -> tasks.Task:
  """The task --task names, its data config built from its own flags and --data_seed."""
  kind = tasks.kind_of(args.task)
  given = {k[len(TASK_FLAG):]: v for k, v in vars(args).items()
           if k.startswith(TASK_FLAG) and v is not None}
  for name in given:
    if name not in {f.name for f in kind.flags}:
      users = [k.name for k in tasks.TASKS.values() if name in {f.name for f in k.flags}]
      raise cli.UsageError(f"--{name} does not apply to task {kind.name}; it applies to: "
                           f"{', '.join(users)}")
  return kind.make(kind.config_from_flags(given, seed=args.data_seed), args.data_dir)


def main(argv: Sequence[str]) -> None:
  args = parse(argv)
  mesh.initialize()  # a multi-process job, if the environment describes one
  cli.check_choice("task", args.task, list(tasks.TASKS))
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
