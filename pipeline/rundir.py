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
from collections.abc import Sequence

from pipeline import errors
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
    raise errors.RunError(f"{run_dir!r} is not a run directory (no {CONFIG}); "
                     f"train one with `python train.py` or pass --run=DIR") from None
  except (OSError, json.JSONDecodeError) as e:
    raise errors.RunError(f"cannot read {path!r}: {e}") from None


def data_dir_entry(data_dir: str, run_dir: str) -> str:
  """How config.json records `data_dir`: a relative path relative to the run directory, so
  that the run finds its data from whatever folder it is evaluated from (a path relative
  to the folder it was trained from would regenerate the data into every other one); an
  absolute path as it is."""
  if os.path.isabs(data_dir):
    return data_dir
  return os.path.relpath(os.path.abspath(data_dir), os.path.abspath(run_dir))


def resolve_data_dir(entry: str, run_dir: str) -> str:
  """The data directory that config.json's `data_dir` entry names. A relative entry is
  relative to the run directory. Configs written before that recorded it relative to the
  folder trained from, so when no such folder exists beside the run, the first existing
  one is taken from the current folder, then from each folder holding the run (the folder
  trained from usually holds it: runs/<name> beside runs/tfds). If none exists, beside the
  run: missing data is generated there, never into the current folder."""
  if os.path.isabs(entry):
    return entry
  beside = os.path.normpath(os.path.join(run_dir, entry))
  if os.path.isdir(beside):
    return beside
  if os.path.isdir(entry):
    return entry
  folder = os.path.dirname(os.path.abspath(run_dir))
  while True:
    if os.path.isdir(os.path.join(folder, entry)):
      return os.path.normpath(os.path.join(folder, entry))
    if os.path.dirname(folder) == folder:
      return beside
    folder = os.path.dirname(folder)


def _differences(old: dict, new: dict, run_dir: str,
                 may_change: dict[str, Sequence[str]]) -> list[str]:
  """What differs between two configs, 'section.key: old -> new', but for the keys of
  `may_change` sections; `data_dir` entries are compared by the directory they resolve to."""
  diffs = [f"{section}.{key}: {old.get(section, {}).get(key)!r} -> {value!r}"
           for section, values in new.items() if isinstance(values, dict)
           for key, value in values.items()
           if old.get(section, {}).get(key) != value and key not in may_change.get(section, ())]
  for key, value in new.items():
    if key == "data_dir" and isinstance(old.get(key), str):
      before, after = (resolve_data_dir(v, run_dir) for v in (old[key], value))
      if os.path.realpath(before) != os.path.realpath(after):
        diffs.append(f"data_dir: {before!r} -> {after!r}")
    elif not isinstance(value, dict) and old.get(key) != value:
      diffs.append(f"{key}: {old.get(key)!r} -> {value!r}")
  return diffs


def claim(run_dir: str, config: dict,
          may_change: dict[str, Sequence[str]] | None = None) -> None:
  """Writes config.json, or checks that the run already there was made with `config`.
  `config["data_dir"]` is a `data_dir_entry`; `may_change` names, per section, the keys a
  resumed run may change (how often training logs, evaluates and saves). A stored config
  that differs only in those, or in how it writes the same data directory (an older
  config's path relative to the folder trained from), is replaced by `config`. (Every
  process of a job calls it; they agree on whether the file exists, then process 0 writes
  it.)"""
  mesh.barrier("run-config-check")
  path = os.path.join(run_dir, CONFIG)
  config = json.loads(json.dumps(config))  # as it reads back: tuples become lists
  old = read_config(run_dir) if os.path.exists(path) else None
  if old is not None:
    diffs = _differences(old, config, run_dir, may_change or {})
    if diffs:
      raise errors.RunError(f"{run_dir!r} holds a run with another config ({'; '.join(diffs[:3])}); "
                       "pass another --workdir or the same settings")
  if mesh.is_main() and old != config:
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
    raise errors.RunError(f"no trained {what} under {root!r}; train one with "
                     f"`python train.py --task={task or 'dyck'}` or pass --run=DIR")
  return max(candidates)[1]
