"""Faithfulness of a proxy sweep to the model, in one compiled program per batch shape.

`evaluate` streams one split through a `FaithfulnessProgram` and adds up what it returns.
The work is split by job, each its own module; this one joins them, and names them all
(`from proxies import faithfulness` is the one import a caller needs):
  program.py  - the jitted program: `batch_sums`, a pure function of one batch (the model
                once, then every proxy setting of the sweep, reduced to sums per sequence
                and per bucket of each group), and `FaithfulnessProgram`, it compiled;
  batching.py - how a split becomes fixed-shape batches: length buckets
                (`length_ladder`, `fixed_batches`, `padding`) and read-out slots;
  results.py  - the sums of a split (`SplitResult`), the metrics made from them
                (`derive`) and their bootstrap intervals;
  capture.py  - activations read through a model's site interface (`site_model`,
                `capture`, `collect_activations`: what proxies are fitted on).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from models import mesh as mesh_lib
from proxies import base
from proxies.batching import (SMALLEST_WIDTH, fixed_batches, length_ladder, padding,
                              read_out_slots)
from proxies.capture import capture, collect_activations, site_model
from proxies.program import FaithfulnessProgram, batch_sums
from proxies.results import (BOOTSTRAP_METRICS, MODEL_SUMS, PROXY_SUMS, SUMS, SplitResult,
                             derive)

__all__ = ["BOOTSTRAP_METRICS", "FaithfulnessProgram", "MODEL_SUMS", "PROXY_SUMS",
           "SMALLEST_WIDTH", "SUMS", "SplitResult", "batch_sums", "capture",
           "collect_activations", "derive", "evaluate", "fixed_batches", "length_ladder",
           "padding", "read_out_slots", "site_model"]


def evaluate(program: FaithfulnessProgram, params, proxy: base.Proxy,
             arrays: Mapping[str, np.ndarray], batch_size: int, pad_id: int,
             by_length: bool = True) -> SplitResult:
  """Streams one split (`inputs`, `gold`, `scored` and the program's groups, each [N, L])
  through the program in fixed-shape batches; memory holds one batch and the sums. With
  `by_length` (the default), batches are length-bucketed (`fixed_batches`): the sums are
  the same, for less work (`program.shapes` says which batch shapes ran)."""
  fill = padding(pad_id, program.groups)
  mesh_lib.check_divisible(batch_size, program.mesh)
  params, proxy = program.place(params, proxy)
  n, length = arrays["inputs"].shape
  widths = length_ladder(length) if by_length else None
  sequence: dict[str, np.ndarray] = {}
  groups = {g: {k: 0.0 for k in SUMS} for g in program.groups}
  by_sequence: dict[str, dict[str, np.ndarray]] = {g: {} for g in program.sequence_groups}
  for batch, rows in fixed_batches(arrays, batch_size, fill, widths):
    out = program(params, proxy, batch)
    for k in SUMS:
      per_row = out["sequence"][k]
      if k not in sequence:
        sequence[k] = np.zeros(per_row.shape[:-1] + (n,), np.float64)
      sequence[k][..., rows] = per_row[..., :len(rows)]
      for g in program.groups:
        groups[g][k] = groups[g][k] + out[g][k].astype(np.float64)
    for g, sums in by_sequence.items():  # [..., B, G] -> rows [..., N, G]
      for k, per_row in out["by_sequence"][g].items():
        if k not in sums:
          sums[k] = np.zeros(per_row.shape[:-2] + (n, per_row.shape[-1]), np.float64)
        sums[k][..., rows, :] = per_row[..., :len(rows), :]
  return SplitResult(sequence, groups, by_sequence)
