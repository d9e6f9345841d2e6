"""Command-line plumbing shared by train.py and evaluate.py.

Bad input ends with one line on stderr naming the problem (and the valid choices) and exit
status 2; nothing is written before the arguments have been checked.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from collections.abc import Callable, Sequence

import proxies
from data import code, dyck_splits
from pipeline import errors
from models import checkpoints


class UsageError(Exception):
  """Bad input from the user: reported in one line, exit status 2."""


# Domain errors of the layers below: bad input too, when they reach an entry point.
BAD_INPUT = (UsageError, errors.RunError, proxies.ProxyError, dyck_splits.SplitError,
             code.CorpusError, checkpoints.CheckpointError)


class Parser(argparse.ArgumentParser):
  """argparse, but an error is one line (no usage dump) raised as UsageError."""

  def error(self, message: str):
    raise UsageError(message)


def run_main(main: Callable[[Sequence[str]], None], argv: Sequence[str] | None = None,
             bad_input: tuple[type[Exception], ...] = (),
             failures: tuple[type[Exception], ...] = ()) -> None:
  """Runs `main(argv)`. Bad input (`BAD_INPUT`: UsageError and the domain errors of every
  layer, and any of `bad_input`) exits 2, any of `failures` exits with its `exit_code` (default 1), each reported
  in one line; Ctrl-C where nothing is saved (data generation, evaluation) is one line too,
  exit 130, not a traceback."""
  prog = os.path.basename(sys.argv[0])
  try:
    main(sys.argv[1:] if argv is None else argv)
  except (*BAD_INPUT, *bad_input) as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    sys.exit(2)
  except failures as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    sys.exit(getattr(e, "exit_code", 1))
  except KeyboardInterrupt:
    print(f"{prog}: interrupted", file=sys.stderr)
    sys.exit(130)


def int_list(text: str) -> list[int]:
  """'1,2,4' -> [1, 2, 4]."""
  try:
    values = [int(v) for v in text.split(",") if v.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}")
  if not values:
    raise argparse.ArgumentTypeError("expected at least one integer")
  return values


check_range, check_choice = errors.check_range, errors.check_choice  # for the entry points


def add_dataclass_flags(parser: argparse.ArgumentParser, cls, skip: Sequence[str] = (),
                        rename: dict[str, str] | None = None, unset: bool = False) -> None:
  """One `--field` flag per int/float/str field of dataclass `cls` (default: the field's;
  with `unset`, None, so that the caller can tell a flag given from one left out)."""
  rename = rename or {}
  for f in dataclasses.fields(cls):
    if f.name in skip or f.type not in ("int", "float", "str"):
      continue
    parser.add_argument(f"--{rename.get(f.name, f.name)}", dest=f.name,
                        default=None if unset else f.default,
                        type={"int": int, "float": float, "str": str}[f.type],
                        help="(default: the task's)" if unset else f"(default: {f.default})")


def from_flags(cls, args: argparse.Namespace, **extra):
  """Builds dataclass `cls` from parsed flags; invalid values raise UsageError."""
  names = {f.name for f in dataclasses.fields(cls)}
  values = {k: v for k, v in vars(args).items() if k in names}
  try:
    return cls(**{**values, **extra})
  except ValueError as e:
    raise UsageError(str(e)) from None


def ensure_writable(directory: str) -> None:
  """Creates `directory` if needed; a UsageError if it cannot be written."""
  try:
    os.makedirs(directory, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe-")
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise UsageError(f"cannot write to {directory!r}: {e.strerror or e}") from None
