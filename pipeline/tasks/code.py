"""Next-character prediction on source code (data/code.py): one language trained on,
held-out files of it and every other language tested, grouped by character category and
repeated-word bucket, intervals over files."""

from __future__ import annotations

import functools
import zlib

import numpy as np

from data import code, code_batch, code_tfds
from pipeline import errors
from pipeline.tasks import base
from models import mesh as mesh_lib, transformer
from proxies import metrics

class CodeTask(base.Task):
  """Next-character prediction on source code: train on one language, test on held-out
  files of it (`iid`) and on other languages (`ood_<language>`)."""

  name = "code"
  seq_len = 256
  n_eval = 500  # windows per test split, sampled across its files
  # Small but wide enough to form induction heads (docs/guide/data-and-splits.md). Flags
  # override each field.
  model_defaults = {"n_heads": 4, "d_model": 256, "d_head": 64, "d_mlp": 1024}

  def __init__(self, config: code.CodeConfig, data_dir: str):
    self.config = config
    self.data_dir = data_dir
    languages = [code.parse_source(s)[0] for s in config.sources]
    self.splits = ("iid",) + tuple(f"ood_{lang}" for lang in languages
                                   if lang != config.train_language)

  pad_id = code.PAD
  scorings = ("all",)  # every position, argmax over the characters
  accuracy_note = "next character"

  def run_name(self, seed: int) -> str:
    return f"{self.name}-{self.config.train_language}-s{seed}"

  def model_config(self, **overrides) -> transformer.ModelConfig:
    return transformer.ModelConfig(vocab_size=code.VOCAB_SIZE, seq_len=self.seq_len,
                                   **{**self.model_defaults, **overrides})

  @functools.cached_property
  def files(self) -> dict[str, list[np.ndarray]]:
    """Each split as its files of character ids (process 0 builds, the others wait)."""
    try:
      return mesh_lib.main_first("code-data",
                                 lambda: code_tfds.load(self.config, self.data_dir))
    except code.CorpusError as e:
      raise errors.RunError(str(e)) from None

  @functools.cached_property
  def data(self) -> dict[str, np.ndarray]:
    """Each split as one stream of character ids (what training windows are drawn from)."""
    return {name: code_batch.stream(f) for name, f in self.files.items()}

  def manifest(self) -> dict:
    return code_tfds.manifest(self.config, self.data_dir)

  def train_batches(self, batch_size: int, seed: int) -> code_batch.WindowSampler:
    try:
      return code_batch.WindowSampler(self.data["train"], self.seq_len, batch_size, seed)
    except ValueError as e:
      raise errors.RunError(str(e)) from None

  def _window_seed(self, split: str) -> list[int]:
    """Windows depend on the data seed and the split only, so every model trained on this
    corpus is evaluated (and its proxies fitted) on the same windows."""
    return [self.config.seed, zlib.crc32(split.encode())]

  def fit_inputs(self, n: int) -> np.ndarray:
    """`n` training windows sampled across the training files."""
    return code_batch.sample_windows(self.files["train"], self.seq_len, n,
                                     self._window_seed("train"))["inputs"]

  @property
  def n_train(self) -> int:
    return sum((len(f) - 1) // self.seq_len for f in self.files["train"])  # windows to fit on

  @functools.cached_property
  def frequent_words(self) -> frozenset:
    """The training files' commonest words (`code_batch.frequent_words`)."""
    return code_batch.frequent_words(self.files["train"])

  @functools.cached_property
  def groups(self) -> dict[str, list[str]]:
    both = [f"{c} / {w}" for c in code_batch.CATEGORIES for w in code_batch.WORD]
    return {"category": list(code_batch.CATEGORIES), "word": list(code_batch.WORD),
            "category_word": both}

  strata: dict[str, tuple[str, tuple[int, ...]]] = {}  # none beyond the groups
  # Where a proxy breaks, for the scan: by word bucket at equal character category.
  breakdown = base.Breakdown("word", "category", "category_word", group_major=False)

  @functools.cache
  def eval_arrays(self, split: str, scoring: str = "all") -> dict[str, np.ndarray]:
    """inputs, gold, scored, the groups, and `file` ([N], each window's file), sampled
    across the split's files (`code_batch.sample_windows`)."""
    a = code_batch.sample_windows(self.files[split], self.seq_len, self.n_eval,
                                  self._window_seed(split), self.frequent_words)
    if not len(a["inputs"]):
      raise errors.RunError(f"split {split!r} has no file of more than {self.seq_len} "
                           "characters (one window)")
    a["category_word"] = a["category"] * len(code_batch.WORD) + a["word"]
    return a

  def clusters(self, split: str) -> np.ndarray:
    """[N]: the file of each evaluation window; intervals resample files, not windows
    (windows of one file are not independent)."""
    return self.eval_arrays(split)["file"]

  def monitored(self) -> dict[str, dict[str, np.ndarray]]:
    return {"iid_accuracy": self.eval_arrays("iid")}

  def decision(self, scoring: str = "all") -> metrics.Decision:
    return metrics.Decision(0, code.PAD)  # argmax over every character but PAD


base.register(base.TaskKind(
    "code", CodeTask, code.CodeConfig,
    flags=(base.Flag("source", "sources", help="language=directory:pattern, repeatable "
                     "(default: the Python stdlib, /usr/include *.h, /usr/share/perl *.pm)",
                     repeat=True),
           base.Flag("train_language", "train_language", help="(default: python)"),
           base.Flag("max_chars", "max_chars", int, help="characters per language "
                     "(default: 20,000,000)")),
    help={"scoring": "all"}))
