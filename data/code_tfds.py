"""The code corpus as a tensorflow-datasets builder (array_record files, no TensorFlow).

Like the Dyck builder: the builder config carries a `CodeConfig`, so every corpus gets its
own directory `<data_dir>/code_corpus/<config.name>/<version>/`; the manifest (sources,
files, characters and skipped files per language, vocabulary) is TFDS metadata.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds

from data import code, tfds_io

_VERSION = tfds.core.Version("1.0.0")


class CodeBuilderConfig(tfds.core.BuilderConfig):

  def __init__(self, config: code.CodeConfig):
    super().__init__(name=config.name, version=_VERSION,
                     description="character-level source files, split by file and language")
    self.code = config


class CodeCorpus(tfds.core.GeneratorBasedBuilder):
  """train and iid (the training language), ood_<language> (every other source)."""

  VERSION = _VERSION

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "index": np.int64,  # position in the split
            "path": tfds.features.Text(),  # relative to the source directory
            "ids": tfds.features.Tensor(shape=(None,), dtype=np.uint8),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded: the files are on this machine
    splits, self.info.metadata["manifest"] = code.build(self.builder_config.code)
    return {name: self._generate_examples(files) for name, files in splits.items()}

  def _generate_examples(self, files):
    for i, (path, text) in enumerate(files):
      yield i, {"index": i, "path": path, "ids": code.encode(text)}


def prepare(config: code.CodeConfig, data_dir: str,
            log: Callable[[str], None] = print) -> CodeCorpus:
  with tfds_io.quiet():  # TFDS warns about every custom builder config
    builder = CodeCorpus(config=CodeBuilderConfig(config), data_dir=data_dir,
                         file_format="array_record")
  return tfds_io.prepare(builder, "the code corpus", log)


def load(config: code.CodeConfig, data_dir: str,
         log: Callable[[str], None] = print) -> dict[str, list[np.ndarray]]:
  """Every split, each a list of files as uint8 character ids."""
  builder = prepare(config, data_dir, log)
  return tfds_io.read_splits(builder, list(builder.info.splits), "ids")


def manifest(config: code.CodeConfig, data_dir: str, log: Callable[[str], None] = print) -> dict:
  return dict(prepare(config, data_dir, log).info.metadata["manifest"])
