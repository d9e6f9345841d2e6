"""Code files as fixed-shape windows, and what the analysis buckets each position by.

Training batches are windows at random offsets into the training files concatenated into
one stream, a function of (seed, step) alone. Evaluation (and proxy fitting) windows are
sampled across the files of a split (`sample_windows`): each window lies inside one file,
so every window has a file id, and the files are spread as evenly as they allow, so that a
split's numbers come from as many files as possible and intervals can resample files.
Position p of a window reads character p and predicts p + 1.

Buckets of a predicted character (docs/guide/data-and-splits.md, Code completion):
  category - what it is: whitespace, identifier letter, digit, bracket, quote, operator or
             other punctuation, out of vocabulary;
  word     - whether it is inside a word (identifier run, from its second letter on: the
             first letter is not copyable), whether that word already occurred earlier in
             the window (copyable by an induction head) or not, and whether the word is
             frequent or rare in the training files (`frequent_words`). A frequent word
             (keywords, `self`, `None`, ...) is predictable from training statistics alone,
             so only a repeated *rare* word isolates copying.
"""

from __future__ import annotations

import collections
import re

import numpy as np

from data import code

CATEGORIES = ("whitespace", "identifier", "digit", "bracket", "quote", "operator", "oov")
WORD = ("outside word", "first frequent word", "first rare word", "repeated frequent word",
        "repeated rare word")
FREQUENT_COVERAGE = 0.5  # frequent words: the commonest, covering half of all occurrences


def _category_table() -> np.ndarray:
  table = np.full(code.VOCAB_SIZE, CATEGORIES.index("operator"), np.int32)
  for i, ch in enumerate(code.CHARS):
    if ch.isspace():
      table[i] = CATEGORIES.index("whitespace")
    elif ch.isalpha() or ch == "_":
      table[i] = CATEGORIES.index("identifier")
    elif ch.isdigit():
      table[i] = CATEGORIES.index("digit")
    elif ch in "()[]{}":
      table[i] = CATEGORIES.index("bracket")
    elif ch in "'\"`":
      table[i] = CATEGORIES.index("quote")
  table[code.OOV] = CATEGORIES.index("oov")
  table[code.PAD] = -1
  return table


CATEGORY_OF = _category_table()
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# One ASCII character per id (OOV and PAD: NUL, a non-word character), for the word regex.
_ASCII = bytes(ord(c) for c in code.CHARS) + b"\0\0" + bytes(256 - code.VOCAB_SIZE)


def text_of(ids: np.ndarray) -> str:
  return np.asarray(ids, np.uint8).tobytes().translate(_ASCII).decode("ascii")


def stream(files: list[np.ndarray]) -> np.ndarray:
  return np.concatenate(files) if files else np.zeros(0, np.uint8)


def frequent_words(files: list[np.ndarray], coverage: float = FREQUENT_COVERAGE) -> frozenset:
  """The commonest words of `files` that together make up `coverage` of all word
  occurrences (ties by spelling, so the set is a function of the files alone)."""
  if not 0 < coverage <= 1:
    raise ValueError(f"coverage must be in (0, 1], got {coverage}")
  counts = collections.Counter(w for ids in files for w in _WORD.findall(text_of(ids)))
  total, kept, out = sum(counts.values()), 0, []
  for word, count in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])):
    if kept >= coverage * total:
      break
    out.append(word)
    kept += count
  return frozenset(out)


def word_buckets(ids_L: np.ndarray, frequent: frozenset = frozenset()) -> np.ndarray:
  """int32[L]: the WORD bucket of each character of one window."""
  out = np.zeros(len(ids_L), np.int32)
  seen: set[str] = set()
  for m in _WORD.finditer(text_of(ids_L)):
    word = m.group()
    bucket = (3 if word in seen else 1) + (word not in frequent)
    out[m.start() + 1:m.end()] = bucket  # the first letter is not copyable
    seen.add(word)
  return out


def _spread(capacity_F: np.ndarray, n: int) -> np.ndarray:
  """Windows per file: n spread as evenly as the files' capacities allow (water-filling in
  the given order: the first files get the remainder)."""
  counts_F = np.zeros(len(capacity_F), np.int64)
  left = min(n, int(capacity_F.sum()))
  while left:
    open_ = np.flatnonzero(counts_F < capacity_F)
    share = np.full(len(open_), left // len(open_))
    share[:left % len(open_)] += 1
    give = np.minimum(share, capacity_F[open_] - counts_F[open_])
    counts_F[open_] += give
    left -= int(give.sum())
  return counts_F


def sample_windows(files: list[np.ndarray], seq_len: int, n: int, seed: int,
                   frequent: frozenset = frozenset()) -> dict[str, np.ndarray]:
  """Up to `n` non-overlapping windows of seq_len + 1 characters, each inside one file, the
  files taken in a seeded order and given windows as evenly as they hold them (a file of
  c characters holds (c - 1) // seq_len); within a file, seeded distinct slots at a seeded
  shift. Files shorter than a window give none. Returns inputs, gold (the next characters),
  scored (every position), category and word buckets of the predicted character, and
  `file` ([N], the index of each window's file in `files`). Windows come ordered by file."""
  rng = np.random.default_rng(seed)
  order_F = rng.permutation(len(files))
  capacity_F = np.array([(len(files[f]) - 1) // seq_len for f in order_F], np.int64)
  counts_F = _spread(capacity_F, n)
  chunks, file_ids = [], []
  for f, count, capacity in sorted(zip(order_F, counts_F, capacity_F)):
    if not count:
      continue
    ids = files[f]
    shift = rng.integers(0, len(ids) - 1 - capacity * seq_len + 1)
    slots = np.sort(rng.choice(capacity, count, replace=False))
    starts = shift + slots * seq_len
    chunks.append(ids[starts[:, None] + np.arange(seq_len + 1)].astype(np.int32))
    file_ids += [f] * count
  chunk = np.concatenate(chunks) if chunks else np.zeros((0, seq_len + 1), np.int32)
  inputs, gold = chunk[:, :-1], chunk[:, 1:]
  word = (np.stack([word_buckets(row, frequent)[1:] for row in chunk]) if len(chunk)
          else np.zeros_like(gold))
  return {"inputs": inputs, "gold": gold, "scored": np.ones_like(gold, bool),
          "category": CATEGORY_OF[gold], "word": word,
          "file": np.asarray(file_ids, np.int32)}


class WindowSampler:
  """Training batches: `batch_size` windows at offsets drawn from (seed, step)."""

  def __init__(self, ids: np.ndarray, seq_len: int, batch_size: int, seed: int):
    if len(ids) <= seq_len + 1:
      raise ValueError(f"the training text has {len(ids)} characters; windows need more "
                       f"than {seq_len + 1}")
    self.ids, self.seq_len, self.batch_size, self.seed = ids, seq_len, batch_size, seed

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, step])
    starts = rng.integers(0, len(self.ids) - self.seq_len - 1, self.batch_size)
    chunk = self.ids[starts[:, None] + np.arange(self.seq_len + 1)].astype(np.int32)
    return {"inputs": chunk[:, :-1], "targets": chunk[:, 1:]}
