"""Orbax checkpoints of the training state under `<run>/checkpoints/<step>/`.

Orbax writes each step into a temporary directory and renames it when complete, so a step
directory that exists is whole; restoring walks back from the newest step to the newest one
that loads. Nothing here unpickles: orbax stores arrays (OCDBT/zarr) and JSON metadata.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(Exception):
  pass


class Checkpoints:

  def __init__(self, run_dir: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(os.path.join(run_dir, "checkpoints"))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    self._manager.wait_until_finished()

  def restore_latest(self, like: Any) -> tuple[int, Any] | None:
    """(step, state) from the newest checkpoint that loads into the structure of `like`,
    or None if there is none. A checkpoint that fails to load is reported and skipped."""
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
    for step in reversed(self.steps()):
      try:
        return step, self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # orbax raises many types for unreadable or mismatched data
        logging.warning("checkpoint %s/%d cannot be restored (%s: %s); trying an older one",
                        self.directory, step, type(e).__name__, str(e).splitlines()[0][:200])
    if self.steps():
      raise CheckpointError(f"no checkpoint under {self.directory} matches this model config")
    return None

  def close(self) -> None:
    self._manager.close()
