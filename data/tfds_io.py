"""Preparing and reading our TFDS builders quietly, without TensorFlow (array_record)."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging


@contextlib.contextmanager
def quiet() -> Iterator[None]:
  """Silences absl logging below ERROR while TFDS works, and only then: TFDS narrates every
  step (and every custom builder config) at INFO/WARNING, but a program importing us may
  want absl's messages for everything else. The absl logger's own level is restored as it
  was (even NOTSET), not just its verbosity."""
  logger = absl_logging.get_absl_logger()
  previous = logger.level
  logger.setLevel(max(previous, logging.ERROR))
  try:
    yield
  finally:
    logger.setLevel(previous)


def prepare(builder: tfds.core.DatasetBuilder, what: str,
            log: Callable[[str], None] = print) -> tfds.core.DatasetBuilder:
  """Generates the dataset unless it is already on disk; returns the builder. (Make the
  builder inside `quiet()` too: TFDS warns about custom configs when it is made.)"""
  tfds.disable_progress_bar()
  with quiet():
    if not builder.is_prepared():
      log(f"generating {what} into {builder.data_dir}")
      with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints "Downloading ..." here
        builder.download_and_prepare()
  return builder


def read_splits(builder: tfds.core.DatasetBuilder, splits, field: str) -> dict[str, list[np.ndarray]]:
  """`field` of every record of each split, in the order of the records' `index`."""
  out = {}
  with quiet():
    sources = builder.as_data_source()
    for name in splits:
      records = sources[name].__getitems__(range(len(sources[name])))
      records.sort(key=lambda r: r["index"])
      out[name] = [r[field] for r in records]
  return out
