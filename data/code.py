"""A character-level code corpus built from source trees on this machine.

By default: the Python standard library of the running interpreter (the training
language), C headers under /usr/include and Perl modules under /usr/share/perl (tests of
other languages). Any directory can be a source (`language=directory:pattern`). Files are
read as UTF-8; binary files (a NUL byte), undecodable ones and unreadable ones are skipped
and counted; files are deduplicated by content across every source. The training language
is split by file into `train` and `iid`; every other language is one split `ood_<language>`.

Characters map to a fixed vocabulary: tab, newline and printable ASCII, plus one
out-of-vocabulary id (counted per language) and PAD.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import os
import sysconfig

import numpy as np

# Tab, newline, then printable ASCII (space .. ~): ids 0..96; OOV 97; PAD 98.
CHARS = "\t\n" + "".join(chr(c) for c in range(32, 127))
OOV = len(CHARS)
PAD = OOV + 1
VOCAB_SIZE = PAD + 1
_LOOKUP = np.full(128, OOV, np.uint8)
_LOOKUP[[ord(c) for c in CHARS]] = np.arange(len(CHARS))


class CorpusError(ValueError):
  """A source that gives nothing to read: one clear line for the user."""


def default_sources() -> tuple[str, ...]:
  return (f"python={sysconfig.get_paths()['stdlib']}:*.py",
          "c=/usr/include:*.h",
          "perl=/usr/share/perl:*.pm")


def parse_source(source: str) -> tuple[str, str, str]:
  """'language=directory:pattern' -> (language, directory, pattern)."""
  language, sep, rest = source.partition("=")
  directory, colon, pattern = rest.rpartition(":")
  if not (sep and colon and language.isidentifier() and directory and pattern):
    raise CorpusError(f"source {source!r} is not of the form language=directory:pattern "
                      "(e.g. python=/usr/lib/python3.11:*.py)")
  return language, directory, pattern


@dataclasses.dataclass(frozen=True)
class CodeConfig:
  sources: tuple[str, ...] = dataclasses.field(default_factory=default_sources)
  train_language: str = "python"
  iid_fraction: float = 0.1  # of the training language's files, held out
  max_chars: int = 20_000_000  # per language, files taken in a seeded order
  max_file_chars: int = 200_000  # longer files are skipped (generated tables, data dumps)
  seed: int = 0

  def __post_init__(self):
    languages = [parse_source(s)[0] for s in self.sources]
    if len(set(languages)) != len(languages):
      raise CorpusError(f"each language may have one source, got {languages}")
    if self.train_language not in languages:
      raise CorpusError(f"train_language {self.train_language!r} has no source; choose one "
                        f"of: {', '.join(languages)}")
    if not 0 < self.iid_fraction < 1:
      raise CorpusError(f"iid_fraction must be in (0, 1), got {self.iid_fraction}")
    if not (1 <= self.max_chars <= 10**10 and 1 <= self.max_file_chars <= 10**9):
      raise CorpusError("max_chars must be in 1..1e10 and max_file_chars in 1..1e9")
    if not 0 <= self.seed < 2**32:
      raise CorpusError(f"seed must be in 0..{2**32 - 1}, got {self.seed}")

  @property
  def name(self) -> str:
    """A short, stable name for this configuration (TFDS config name)."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
    return f"{self.train_language}_s{self.seed}_{digest.hexdigest()[:10]}"


def encode(text: str) -> np.ndarray:
  """Characters -> uint8 ids (OOV for anything outside the vocabulary)."""
  points = np.frombuffer(text.encode("utf-32-le"), np.uint32)
  return np.where(points < 128, _LOOKUP[np.minimum(points, 127)], OOV).astype(np.uint8)


def decode(ids: np.ndarray) -> str:
  return "".join(CHARS[i] if i < OOV else "\ufffd" if i == OOV else "" for i in ids)


@dataclasses.dataclass
class Source:
  """The files of one language, and what was skipped and why."""

  language: str
  directory: str
  files: list[tuple[str, str]]  # (path relative to the directory, text)
  skipped: dict[str, int]


SKIP_DIRS = ("site-packages", "dist-packages", "__pycache__", ".git")  # not the tree's own source


def _matching(directory: str, pattern: str) -> list[str]:
  out = []
  for root, dirs, names in os.walk(directory):
    dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
    out += [os.path.join(root, n) for n in sorted(names) if fnmatch.fnmatch(n, pattern)]
  return out


def read_source(source: str, config: CodeConfig, seen: set[str]) -> Source:
  """Reads one source; `seen` holds content digests of files already taken (dedup)."""
  language, directory, pattern = parse_source(source)
  if not os.path.isdir(directory):
    raise CorpusError(f"corpus directory {directory!r} ({language}) does not exist or is "
                      "not a directory")
  paths = _matching(directory, pattern)
  if not paths:
    raise CorpusError(f"corpus directory {directory!r} ({language}) has no {pattern} files")
  order = np.random.default_rng([config.seed, len(paths)]).permutation(len(paths))
  skipped = dict.fromkeys(("unreadable", "binary", "undecodable", "too_long", "duplicate",
                           "over_budget"), 0)
  files, chars = [], 0
  for taken, i in enumerate(order):
    if chars >= config.max_chars:  # the budget is spent: the rest are not even read
      skipped["over_budget"] += len(order) - taken
      break
    path = paths[i]
    try:
      with open(path, "rb") as f:
        raw = f.read(config.max_file_chars * 4 + 1)
    except OSError:
      skipped["unreadable"] += 1
      continue
    if b"\0" in raw:
      skipped["binary"] += 1
      continue
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError:
      skipped["undecodable"] += 1
      continue
    if len(text) > config.max_file_chars:
      skipped["too_long"] += 1
      continue
    digest = hashlib.sha256(raw).hexdigest()
    if digest in seen:
      skipped["duplicate"] += 1
      continue
    if chars + len(text) > config.max_chars:
      skipped["over_budget"] += 1
      continue
    seen.add(digest)
    files.append((os.path.relpath(path, directory), text))
    chars += len(text)
  if not files:
    raise CorpusError(f"corpus directory {directory!r} ({language}) has no readable text "
                      f"files ({', '.join(f'{k} {v}' for k, v in skipped.items() if v)})")
  return Source(language, directory, files, skipped)


def build(config: CodeConfig) -> tuple[dict[str, list[tuple[str, str]]], dict]:
  """(split name -> [(path, text)], manifest). Splits: train, iid, ood_<language>."""
  seen: set[str] = set()
  sources = [read_source(s, config, seen) for s in config.sources]
  splits: dict[str, list[tuple[str, str]]] = {}
  languages = {}
  for source in sources:
    if source.language == config.train_language:
      n_iid = max(1, round(config.iid_fraction * len(source.files)))
      if n_iid >= len(source.files):
        raise CorpusError(f"{source.language} has {len(source.files)} file(s): too few to "
                          "hold some out for the iid split")
      splits["train"], splits["iid"] = source.files[n_iid:], source.files[:n_iid]
    else:
      splits[f"ood_{source.language}"] = source.files
    texts = [text for _, text in source.files]
    languages[source.language] = {
        "directory": source.directory, "files": len(texts),
        "chars": sum(map(len, texts)),
        "oov_chars": int(sum(int((encode(t) == OOV).sum()) for t in texts)),
        "skipped": source.skipped,
    }
  manifest = {
      "config": dataclasses.asdict(config),
      "vocab": list(CHARS) + ["<oov>", "<pad>"],
      "languages": languages,
      "splits": {name: {"files": len(f), "chars": sum(len(t) for _, t in f)}
                 for name, f in splits.items()},
  }
  return splits, manifest
