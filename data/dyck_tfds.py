"""The Dyck splits as a tensorflow-datasets builder (array_record files, no TensorFlow needed).

The builder config carries a `DyckConfig`, so every distinct dataset gets its own directory
`<data_dir>/dyck/<config.name>/<version>/`. TFDS writes into a temporary directory and
renames it when complete, so a dataset on disk is always whole. The manifest (config, seed,
vocabulary, counts, length and depth statistics per split) is TFDS metadata:
`metadata.json` beside the array_record files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds

from data import dyck, dyck_splits, tfds_io

# 1.3.0: the validation splits (iid and deep), the plain deep sample and the long-shallow
# control (the six earlier splits unchanged: each split has its own random stream).
_VERSION = tfds.core.Version("1.3.0")


class DyckBuilderConfig(tfds.core.BuilderConfig):

  def __init__(self, config: dyck_splits.DyckConfig):
    super().__init__(name=config.name, version=_VERSION,
                     description="Dyck-(k, m) strings, Hewitt/Murty sampler, Murty splits")
    self.dyck = config


class Dyck(tfds.core.GeneratorBasedBuilder):
  """The splits of Dyck-(k, m) bracket strings (see `data.dyck_splits.SPLITS`)."""

  VERSION = _VERSION
  RELEASE_NOTES = {"1.1.0": "unseen_depth stratified by the depth of its deepest scored close",
                   "1.3.0": "val_iid, val_depth, unseen_depth_plain and long_shallow"}
  BUILDER_CONFIGS = [DyckBuilderConfig(dyck_splits.DyckConfig())]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "index": np.int64,  # position in generation order
            "brackets": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded: the data is sampled
    config = self.builder_config.dyck
    splits = dyck_splits.generate(config)
    self.info.metadata["manifest"] = {
        "config": dataclasses.asdict(config),
        "vocab": dyck.Vocab(config.n_types).tokens(),
        "splits": {name: dyck_splits.split_stats(s, config.n_types) for name, s in splits.items()},
        "controls": {control: {"target": target, **dyck_splits.match_report(
            splits[control], splits[target], config)}
            for control, target in dyck_splits.CONTROL_SPLITS.items()},
    }
    return {name: self._generate_examples(strings) for name, strings in splits.items()}

  def _generate_examples(self, strings):
    for i, s in enumerate(strings):
      yield i, {"index": i, "brackets": s}


def builder(config: dyck_splits.DyckConfig, data_dir: str) -> Dyck:
  # TFDS refuses a custom config named like a predefined one: name the default by name.
  predefined = {c.name for c in Dyck.BUILDER_CONFIGS}
  named = config.name if config.name in predefined else DyckBuilderConfig(config)
  with tfds_io.quiet():
    return Dyck(config=named, data_dir=data_dir, file_format="array_record")


def prepare(config: dyck_splits.DyckConfig, data_dir: str,
            log: Callable[[str], None] = print) -> Dyck:
  """Generates the dataset unless it is already on disk; returns its builder."""
  return tfds_io.prepare(builder(config, data_dir), "the Dyck splits", log)


def load(config: dyck_splits.DyckConfig, data_dir: str,
         splits: tuple[str, ...] = dyck_splits.SPLITS, log: Callable[[str], None] = print
         ) -> dict[str, list[np.ndarray]]:
  """The requested splits, each a list of bracket-id arrays in generation order."""
  return tfds_io.read_splits(prepare(config, data_dir, log), splits, "brackets")


def manifest(config: dyck_splits.DyckConfig, data_dir: str,
             log: Callable[[str], None] = print) -> dict:
  return dict(prepare(config, data_dir, log).info.metadata["manifest"])
