"""The pipeline's domain errors: what a caller asked that cannot be done, said in one line.

Library code (tasks, run directories, evaluation, the API) raises these; only the entry
points (`experiments.cli.run_main`) turn them into a one-line error and exit status 2, so a
notebook gets an exception it can catch instead of a process that exits.
"""

from __future__ import annotations

from collections.abc import Sequence


class RunError(ValueError):
  """A run, task, split or setting that does not exist or cannot be used as asked."""


def check_range(name: str, value: int, lo: int, hi: int, why: str = "") -> None:
  if not lo <= value <= hi:
    raise RunError(f"{name}={value} is out of range{why}; choose {lo}..{hi}")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    raise RunError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
