"""Preparing and reading our TFDS builders quietly, without TensorFlow (array_record)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging

# TFDS narrates every step (and every custom builder config) at INFO/WARNING.
absl_logging.set_verbosity(absl_logging.ERROR)


def prepare(builder: tfds.core.DatasetBuilder, what: str,
            log: Callable[[str], None] = print) -> tfds.core.DatasetBuilder:
  """Generates the dataset unless it is already on disk; returns the builder."""
  tfds.disable_progress_bar()
  if not builder.is_prepared():
    log(f"generating {what} into {builder.data_dir}")
    with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints "Downloading ..." here
      builder.download_and_prepare()
  return builder


def read_splits(builder: tfds.core.DatasetBuilder, splits, field: str) -> dict[str, list[np.ndarray]]:
  """`field` of every record of each split, in the order of the records' `index`."""
  sources = builder.as_data_source()
  out = {}
  for name in splits:
    records = sources[name].__getitems__(range(len(sources[name])))
    records.sort(key=lambda r: r["index"])
    out[name] = [r[field] for r in records]
  return out
