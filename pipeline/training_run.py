"""Train one run of a task into its run directory (shared by train.py and the reproduction)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from pipeline import rundir, tasks
from models import mesh, training, transformer


def default_run_dir(task, train_cfg: training.TrainConfig, root: str = rundir.RUNS_ROOT) -> str:
  return os.path.join(root, task.run_name(train_cfg.seed))


def train(task, model_cfg: transformer.ModelConfig,
          train_cfg: training.TrainConfig, run_dir: str,
          log: Callable[[str], None] = print, progress: bool = False) -> tuple[object, float]:
  """Trains (or resumes) the run in `run_dir`; returns (params, iid accuracy). In a
  multi-process job every process calls it and only process 0 logs. `progress`: a bar over
  the steps (on a terminal), for callers that log nothing."""
  log = log if mesh.is_main() else (lambda line: None)
  monitored = task.monitored()  # makes the data first: a config that cannot be met claims no run
  rundir.claim(run_dir, {"task": task.name,
                         "data_dir": rundir.data_dir_entry(task.data_dir, run_dir),
                         "data": dataclasses.asdict(task.config),
                         "model": dataclasses.asdict(model_cfg),
                         "train": dataclasses.asdict(train_cfg)},
               may_change={"train": training.BOOKKEEPING})
  log(f"run directory: {run_dir}")
  accuracy = tasks.model_accuracy(model_cfg, task.decision(), task.pad_id)
  params = training.train(model_cfg, train_cfg, run_dir, task.pad_id,
                          task.train_batches(train_cfg.batch_size, train_cfg.seed),
                          lambda p: {name: accuracy(p, a) for name, a in monitored.items()},
                          log=log, progress=progress)
  return params, accuracy(params, monitored["iid_accuracy"])
