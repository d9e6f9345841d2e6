"""Whole-or-nothing file writes: write a temporary file beside the target, then rename it."""

from __future__ import annotations

import os
import tempfile

TMP_PREFIX = ".tmp-"


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def write_text(path: str, text: str) -> None:
  """Replaces `path` with `text`; a reader (or a crash) never sees half a file."""
  write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str, data: bytes) -> None:
  """Replaces `path` with `data`; a reader (or a crash) never sees half a file."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX, suffix=os.path.basename(path))
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would have
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise
