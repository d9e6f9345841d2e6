"""Run directories: one per trained model, holding everything about it.

  <run>/config.json        task, data, model and training configs (plain JSON)
  <run>/metrics.jsonl      one JSON object per logged training step
  <run>/checkpoints/<step> orbax checkpoints (params + optimizer state)
  <run>/eval/<name>.json   evaluation tables (and .csv beside each)

Every file is written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import os

from experiments.cli import UsageError
from models import atomic, mesh

RUNS_ROOT = "runs"
CONFIG = "config.json"


def write_json(path: str, obj) -> None:
  atomic.write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_csv(path: str, rows: list[dict]) -> None:
  columns = list(dict.fromkeys(k for row in rows for k in row))
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=columns)
  writer.writeheader()
  writer.writerows(rows)
  atomic.write_text(path, buffer.getvalue())


def read_config(run_dir: str) -> dict:
  path = os.path.join(run_dir, CONFIG)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise UsageError(f"{run_dir!r} is not a run directory (no {CONFIG}); "
                     f"train one with `python train.py` or pass --run=DIR") from None
  except (OSError, json.JSONDecodeError) as e:
    raise UsageError(f"cannot read {path!r}: {e}") from None


def claim(run_dir: str, config: dict) -> None:
  """Writes config.json, or checks that the run already there was made with `config`.
  (Every process of a job calls it; they agree on whether the file exists, then process 0
  writes it.)"""
  mesh.barrier("run-config-check")
  path = os.path.join(run_dir, CONFIG)
  if os.path.exists(path):
    old = read_config(run_dir)
    diffs = [f"{section}.{key}: {old.get(section, {}).get(key)!r} -> {value!r}"
             for section, values in config.items() if isinstance(values, dict)
             for key, value in values.items() if old.get(section, {}).get(key) != value]
    diffs += [f"{key}: {old.get(key)!r} -> {value!r}" for key, value in config.items()
              if not isinstance(value, dict) and old.get(key) != value]
    if diffs:
      raise UsageError(f"{run_dir!r} holds a run with another config ({'; '.join(diffs[:3])}); "
                       "pass another --workdir or the same settings")
    return
  if mesh.is_main():
    write_json(path, config)
  mesh.barrier("run-config-written")


def latest_run(root: str = RUNS_ROOT, task: str | None = None) -> str:
  """The most recently trained run under `root` (by its newest checkpoint), of `task` if
  given."""
  candidates = []
  if os.path.isdir(root):
    for name in os.listdir(root):
      ckpts = os.path.join(root, name, "checkpoints")
      if os.path.exists(os.path.join(root, name, CONFIG)) and os.path.isdir(ckpts):
        if task is None or read_config(os.path.join(root, name)).get("task") == task:
          candidates.append((os.path.getmtime(ckpts), os.path.join(root, name)))
  if not candidates:
    what = f"{task} run" if task else "run"
    raise UsageError(f"no trained {what} under {root!r}; train one with "
                     f"`python train.py --task={task or 'dyck'}` or pass --run=DIR")
  return max(candidates)[1]
