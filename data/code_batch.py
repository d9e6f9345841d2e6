"""Code files as fixed-shape windows, and what the analysis buckets each position by.

A split's files are concatenated into one stream of character ids. Training batches are
windows at random offsets, a function of (seed, step) alone; evaluation uses consecutive
non-overlapping windows. Position p of a window reads character p and predicts p + 1.

Buckets of a predicted character (SPEC §3.2):
  category - what it is: whitespace, identifier letter, digit, bracket, quote, operator or
             other punctuation, out of vocabulary;
  word     - whether it continues a word (identifier run) that already occurred earlier in
             the window (copyable by an induction head), continues a word seen for the first
             time, or is not inside a word (or starts one).
"""

from __future__ import annotations

import re

import numpy as np

from data import code

CATEGORIES = ("whitespace", "identifier", "digit", "bracket", "quote", "operator", "oov")
WORD = ("outside word", "first occurrence", "repeated word")


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
_ONE_CHAR = list(code.CHARS) + ["\0", "\0"]  # OOV and PAD: one non-word character each


def stream(files: list[np.ndarray]) -> np.ndarray:
  return np.concatenate(files) if files else np.zeros(0, np.uint8)


def word_buckets(ids_L: np.ndarray) -> np.ndarray:
  """int32[L]: the WORD bucket of each character of one window."""
  text = "".join(_ONE_CHAR[i] for i in ids_L)  # one character per id
  out = np.zeros(len(ids_L), np.int32)
  seen: set[str] = set()
  for m in _WORD.finditer(text):
    word = m.group()
    out[m.start() + 1:m.end()] = 2 if word in seen else 1  # the first letter is not copyable
    seen.add(word)
  return out


def windows(ids: np.ndarray, seq_len: int, n: int | None = None) -> dict[str, np.ndarray]:
  """Consecutive non-overlapping windows (at most `n`): inputs, gold (the next characters),
  scored (every position), category and word buckets of the predicted character."""
  count = (len(ids) - 1) // seq_len
  count = count if n is None else min(n, count)
  starts = np.arange(count) * seq_len
  index = starts[:, None] + np.arange(seq_len + 1)
  chunk = ids[index].astype(np.int32) if count else np.zeros((0, seq_len + 1), np.int32)
  inputs, gold = chunk[:, :-1], chunk[:, 1:]
  word = np.stack([word_buckets(row)[1:] for row in chunk]) if count else gold * 0
  return {"inputs": inputs, "gold": gold, "scored": np.ones_like(gold, bool),
          "category": CATEGORY_OF[gold], "word": word}


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
