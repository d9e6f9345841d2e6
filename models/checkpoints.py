"""Orbax checkpoints of the training state under `<run>/checkpoints/<step>/`, checked on load.

Orbax writes each step into a temporary directory and renames it when complete. After that
we write `<step>/integrity.json`: the SHA-256 of every file in the step. A step counts as
good only if that file exists and every digest matches, so a checkpoint cut short (the
process killed before the digests were written) or damaged later (truncated, bit-flipped)
is reported by name, moved to `<run>/checkpoints.bad/`, and the previous good one is used.
Orbax removes old steps (beyond `max_to_keep`) only after a newer one is committed, so the
last good checkpoint is never removed before a newer one is complete.

Nothing here unpickles: orbax stores arrays (OCDBT) and JSON metadata.

In a multi-process job every process calls `save` and `restore_latest` (orbax writes each
array once and coordinates the processes); process 0 alone writes the digests and sets
damaged steps aside, the others wait for it. The digests assume the checkpoint directory
is one shared local or network filesystem.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from models import atomic, mesh

INTEGRITY = "integrity.json"


class CheckpointError(Exception):
  pass


def _digests(step_dir: str) -> dict[str, str]:
  out = {}
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir)
      if rel == INTEGRITY or name.startswith(atomic.TMP_PREFIX):
        continue
      with open(path, "rb") as f:
        out[rel] = hashlib.sha256(f.read()).hexdigest()
  return out


def problem(step_dir: str) -> str | None:
  """Why the checkpoint in `step_dir` cannot be trusted, or None if it is whole."""
  try:
    with open(os.path.join(step_dir, INTEGRITY), encoding="utf-8") as f:
      expected = json.load(f)
  except FileNotFoundError:
    return "no integrity.json (saving was interrupted)"
  except (OSError, json.JSONDecodeError) as e:
    return f"unreadable integrity.json ({e})"
  actual = _digests(step_dir)
  for rel, digest in expected.items():
    if rel not in actual:
      return f"file {rel} is missing"
    if actual[rel] != digest:
      return f"file {rel} does not match its digest"
  extra = sorted(set(actual) - set(expected))
  return f"unexpected file {extra[0]}" if extra else None


def _mismatch(expected: Any, stored: Any) -> str | None:
  """How the arrays stored in a checkpoint (orbax metadata) differ from `expected`, or None.

  Orbax restores arrays with their stored shapes whatever the target says, so this check is
  what turns "a checkpoint of another model" into a clear error. Paths are compared where both
  spell them alike (plain dicts: the parameters); optimizer-state namedtuples are spelled
  differently in the metadata and are covered by the count of arrays."""
  spell = lambda tree: {jax.tree_util.keystr(path): leaf
                        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
  want, have = spell(expected), spell(stored)
  if len(want) != len(have):
    return f"the checkpoint holds {len(have)} arrays, the model {len(want)}"
  for path in sorted(set(want) & set(have)):
    w, h = want[path], have[path]
    if tuple(w.shape) != tuple(h.shape) or w.dtype != h.dtype:
      return (f"{path} is {h.dtype}{list(h.shape)} in the checkpoint, "
              f"{w.dtype}{list(w.shape)} in the model")
  return None


class Checkpoints:

  def __init__(self, run_dir: str, max_to_keep: int | None = 3):
    """`max_to_keep`: the newest checkpoints kept; None keeps every one."""
    self.directory = os.path.abspath(os.path.join(run_dir, "checkpoints"))
    self._manager = ocp.CheckpointManager(
        self.directory, item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state: Any) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    self._manager.wait_until_finished()
    mesh.barrier(f"checkpoint-{step}-written")
    if mesh.is_main():
      step_dir = self._step_dir(step)
      atomic.write_text(os.path.join(step_dir, INTEGRITY),
                        json.dumps(_digests(step_dir), indent=1, sort_keys=True))
    mesh.barrier(f"checkpoint-{step}-verified")

  def _set_aside(self, step: int, why: str) -> None:
    bad = self.directory + ".bad"
    os.makedirs(bad, exist_ok=True)
    if mesh.is_main():
      target = os.path.join(bad, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
      logging.warning("checkpoint %s is damaged (%s); moved to %s, using an older one",
                      self._step_dir(step), why, target)
      shutil.move(self._step_dir(step), target)
    mesh.barrier(f"checkpoint-{step}-set-aside")
    self._manager.reload()

  def restore_latest(self, like: Any) -> tuple[int, Any] | None:
    """(step, state) from the newest good checkpoint, loaded into the structure of `like`,
    or None if there is none. Damaged checkpoints are reported and set aside."""
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
    mismatch = None
    for step in reversed(self.steps()):
      why = problem(self._step_dir(step))
      if why is not None:
        self._set_aside(step, why)
        continue
      mismatch = _mismatch(abstract, self._manager.item_metadata(step))
      if mismatch is None:
        return step, self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    if mismatch:
      raise CheckpointError(f"the checkpoints under {self.directory} do not fit this model "
                            f"config ({mismatch})")
    return None

  def restore(self, step: int, like: Any) -> tuple[int, Any]:
    """(step, state) of the checkpoint at `step`; CheckpointError if it is missing or not
    whole (a damaged one is reported, never set aside here: a newer one may be the latest)."""
    if step not in self.steps():
      raise CheckpointError(f"no checkpoint at step {step} under {self.directory} (steps: "
                            f"{', '.join(map(str, self.steps())) or 'none'})")
    why = problem(self._step_dir(step))
    if why is not None:
      raise CheckpointError(f"checkpoint {self._step_dir(step)} is damaged ({why})")
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
    mismatch = _mismatch(abstract, self._manager.item_metadata(step))
    if mismatch:
      raise CheckpointError(f"the checkpoint at step {step} does not fit this model ({mismatch})")
    return step, self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def close(self) -> None:
    self._manager.close()
