"""How a split is cut into the fixed-shape batches a compiled program runs.

  - length buckets: strings sorted by length, each batch cut to the smallest width of a
    short ladder (powers of two up to the model's positions) that holds its longest
    string, so attention is not spent on padding (`length_ladder`, `fixed_batches`);
  - read-out slots: a batch's scored positions gathered into T slots, T one of three
    sizes per width, so that next-token distributions and their metrics are computed at
    scored positions only (`read_out_slots`).
Each (rows, width, slots) shape is one compilation; a split streams through batches of one
size, so memory does not grow with the split.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from models import mesh as mesh_lib

SMALLEST_WIDTH = 16  # the shortest length bucket


def padding(pad_id: int, groups: Iterable[str] = ()) -> dict:
  """What pads a batch of evaluation arrays: PAD inputs, no gold, nothing scored, no bucket."""
  return {"inputs": pad_id, "gold": -1, "scored": False, **{g: -1 for g in groups}}


def length_ladder(length: int, smallest: int = SMALLEST_WIDTH) -> tuple[int, ...]:
  """Batch widths: powers of two from `smallest` below `length`, then `length` itself."""
  widths, w = [], smallest
  while w < length:
    widths.append(w)
    w *= 2
  return (*widths, length)


def fixed_batches(arrays: Mapping[str, np.ndarray], batch_size: int, fill: Mapping[str, int],
                  widths: tuple[int, ...] | None = None
                  ) -> Iterator[tuple[dict, np.ndarray]]:
  """Batches of `batch_size` rows of the [N, L, ...] arrays named in `fill`; the last is
  padded with rows of `fill` values. Yields (batch, indices of its real rows).

  With `widths` (ascending, the last = L), strings are taken shortest first and each batch
  is cut to the smallest width that holds its longest string; a string's length is up to
  its last position whose `inputs` is not padding or that is `scored`."""
  first = arrays[next(iter(fill))]
  n, length = first.shape[:2]
  order = np.arange(n)
  if widths is not None:
    used_NxL = arrays["inputs"] != fill["inputs"]
    if "scored" in arrays:
      used_NxL = used_NxL | arrays["scored"]
    lengths = np.where(used_NxL.any(1), length - np.argmax(used_NxL[:, ::-1], axis=1), 1)
    order = np.argsort(lengths, kind="stable")
  for start in range(0, n, batch_size):
    rows = order[start:start + batch_size]
    width = length if widths is None else next(w for w in widths if w >= lengths[rows].max())
    batch = {}
    for name in fill:
      chunk = arrays[name][rows][:, :width]
      if len(rows) < batch_size:
        pad = np.full((batch_size - len(rows),) + chunk.shape[1:], fill[name], chunk.dtype)
        chunk = np.concatenate([chunk, pad])
      batch[name] = chunk
    yield batch, rows


def read_out_slots(batch: Mapping[str, np.ndarray], groups: Iterable[str],
                   mesh) -> dict[str, np.ndarray]:
  """The scored positions of a [B, L] batch gathered into T slots: rows, cols, gold,
  scored and each group's bucket, all [T], T the first of B*L/16, B*L/4, B*L (rounded up
  to the mesh's devices) that holds them; the rest pad (unscored, no bucket). Three sizes
  per width keep compilations few (each shape is one)."""
  rows, cols = np.nonzero(batch["scored"])
  n_rows, length = batch["scored"].shape
  n_slots = next(t for t in (mesh_lib.round_up(n_rows * length // 16, mesh),
                             mesh_lib.round_up(n_rows * length // 4, mesh),
                             n_rows * length) if t >= len(rows))
  pad = n_slots - len(rows)
  take = lambda a, fill: np.concatenate([a[rows, cols], np.full(pad, fill, a.dtype)])
  return {"rows": np.concatenate([rows, np.zeros(pad, rows.dtype)]).astype(np.int32),
          "cols": np.concatenate([cols, np.zeros(pad, cols.dtype)]).astype(np.int32),
          "gold": take(batch["gold"], -1), "scored": take(batch["scored"], False),
          **{g: take(batch[g], -1) for g in groups}}
