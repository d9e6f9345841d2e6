"""Dyck-(k, m) strings: the vocabulary, the Hewitt/Murty sampler, a string's structure
(depths, stack tops, Murty positions, segment skeletons) and the Murty/Yao text format.

A string is an int array of bracket ids (no START/END): open bracket of type j is id j,
its close is id k + j (Yao's order). `Vocab` adds START, END and PAD and spells tokens as
Murty/Yao do: open `(a`, close `a)`.

The sampler is the Hewitt et al. (2020) automaton, vectorized over many strings at once:
- empty stack: END with probability 1/2, else one of k opens uniformly (END drawn before
  `min_length` is redrawn, i.e. an open is forced);
- stack at `max_depth`: close the top;
- otherwise: close the top with probability 1/2, else one of k opens uniformly.
Strings longer than `max_length` brackets are rejected whole.

The datasets drawn from it, split by split, are `data/dyck_splits.py`.
"""

from __future__ import annotations

import dataclasses
import itertools
import string
from collections.abc import Callable, Sequence

import numpy as np


# ----------------------------------------------------------------------------------------
# Vocabulary


def bracket_names(n_types: int) -> list[str]:
  """a..z, then aa..zz, ... (the iterator Hewitt and Yao use)."""
  names = []
  for width in itertools.count(1):
    for letters in itertools.product(string.ascii_lowercase, repeat=width):
      names.append("".join(letters))
      if len(names) == n_types:
        return names
  raise AssertionError("unreachable")


@dataclasses.dataclass(frozen=True)
class Vocab:
  """Token ids: opens 0..k-1, closes k..2k-1, START 2k, END 2k+1, PAD 2k+2."""

  n_types: int

  @property
  def start(self) -> int:
    return 2 * self.n_types

  @property
  def end(self) -> int:
    return 2 * self.n_types + 1

  @property
  def pad(self) -> int:
    return 2 * self.n_types + 2

  @property
  def size(self) -> int:
    return 2 * self.n_types + 3

  def tokens(self) -> list[str]:
    names = bracket_names(self.n_types)
    return [f"({n}" for n in names] + [f"{n})" for n in names] + ["START", "END", "PAD"]

  def is_close(self, ids: np.ndarray) -> np.ndarray:
    return (ids >= self.n_types) & (ids < 2 * self.n_types)


# ----------------------------------------------------------------------------------------
# Sampling


def sample(rng: np.random.Generator, n: int, *, n_types: int, depth_cap: int,
           min_length: int, max_length: int, chunk: int = 8192,
           progress: Callable[[int], object] | None = None,
           close_prob: np.ndarray | None = None) -> list[np.ndarray]:
  """Draws `n` strings from the automaton, `chunk` candidates at a time (`progress` is told
  how many strings each chunk added). `close_prob[d]`: the probability of closing at depth
  d (0 < d < depth_cap) instead of the automaton's 1/2, for the long-shallow control."""
  out: list[np.ndarray] = []
  while len(out) < n:
    drawn = _sample_chunk(rng, chunk, n_types, depth_cap, min_length, max_length, close_prob)
    if progress:
      progress(min(len(drawn), n - len(out)))
    out.extend(drawn)
  return out[:n]


def _sample_chunk(rng, b, k, depth_cap, min_length, max_length, close_prob=None):
  ids = np.zeros((b, max_length + 1), np.int32)
  stack = np.zeros((b, depth_cap + 1), np.int32)
  depth = np.zeros(b, np.int32)
  length = np.zeros(b, np.int32)
  running = np.ones(b, bool)
  rows = np.arange(b)
  for t in range(max_length + 1):
    u = rng.random(b)
    coin = u < 0.5
    kind = rng.integers(k, size=b)
    empty, full = depth == 0, depth == depth_cap
    end = running & empty & coin & (length >= min_length)
    close_coin = coin if close_prob is None else u < close_prob[depth]
    close = running & ~empty & (full | close_coin)
    open_ = running & ~end & ~close
    running &= ~end
    top = stack[rows, np.maximum(depth - 1, 0)]
    ids[:, t] = np.where(close, top + k, kind)
    stack[rows, depth] = np.where(open_, kind, stack[rows, depth])
    depth += open_.astype(np.int32) - close.astype(np.int32)
    length += running
    if not running.any():
      break
  accepted = ~running  # still running after max_length + 1 tokens: too long, rejected
  return [ids[i, :length[i]].copy() for i in np.flatnonzero(accepted)]


# ----------------------------------------------------------------------------------------
# Structure


# Murty et al.'s scored positions: closes whose matching open is at least this far back.
MIN_DISTANCE = 10
# Distance buckets: a close whose open is d tokens back falls in [edge_i, edge_i+1).
DISTANCE_EDGES = (1, 5, 10, 20, 40, 80)


def depth_after(ids: np.ndarray, n_types: int) -> np.ndarray:
  """Stack depth after each bracket."""
  return np.cumsum(np.where(ids < n_types, 1, -1))


def max_depth(ids: np.ndarray, n_types: int) -> int:
  return int(depth_after(ids, n_types).max(initial=0))


def stack_tops(ids_NxL: np.ndarray, n_types: int) -> tuple[np.ndarray, np.ndarray]:
  """For rows of ids [N, L] (ids >= 2 k, such as END or PAD, neither open nor close): the
  stack depth before each token, and the index of the open on top of the stack then (-1
  when it is empty). At a close these are its key depth (the depth of the open it matches)
  and that open's index. Vectorized; the only Python loop runs over depth levels."""
  is_open = ids_NxL < n_types
  step = is_open.astype(np.int32) - ((ids_NxL >= n_types) & (ids_NxL < 2 * n_types))
  depth_after_NxL = np.cumsum(step, axis=1)
  depth_before_NxL = depth_after_NxL - step
  positions = np.broadcast_to(np.arange(ids_NxL.shape[1]), ids_NxL.shape)
  top_NxL = np.full(ids_NxL.shape, -1, np.int64)
  for d in range(1, int(depth_before_NxL.max(initial=0)) + 1):
    last_open_at_d = np.maximum.accumulate(
        np.where(is_open & (depth_after_NxL == d), positions, -1), axis=1)
    top_NxL = np.where(depth_before_NxL == d, last_open_at_d, top_NxL)
  return depth_before_NxL.astype(np.int32), top_NxL


def scored_closes(strings: Sequence[np.ndarray], n_types: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """int[N, L] twice: at each close whose open is at least MIN_DISTANCE tokens back (a
  Murty position), its key depth and its distance to its open; 0 elsewhere."""
  lengths = [len(s) for s in strings]
  ids_NxL = np.full((len(strings), max(lengths, default=0)), 2 * n_types, np.int32)
  for i, s in enumerate(strings):
    ids_NxL[i, :len(s)] = s
  depth_NxL, top_NxL = stack_tops(ids_NxL, n_types)
  is_close = (ids_NxL >= n_types) & (ids_NxL < 2 * n_types)
  distance_NxL = np.arange(ids_NxL.shape[1]) - top_NxL
  scored = is_close & (distance_NxL >= MIN_DISTANCE)
  return np.where(scored, depth_NxL, 0), np.where(scored, distance_NxL, 0)


def scored_key_depths(strings: Sequence[np.ndarray], n_types: int) -> np.ndarray:
  """int[N, L]: the key depth of each Murty position, 0 elsewhere."""
  return scored_closes(strings, n_types)[0]


def close_counts(strings: Sequence[np.ndarray], n_types: int, max_key_depth: int,
                 distance_edges: Sequence[int] = DISTANCE_EDGES) -> np.ndarray:
  """int[max_key_depth + 1, len(distance_edges)]: a split's Murty positions at each key
  depth (<= max_key_depth) and distance bucket [edge_i, edge_i+1)."""
  depth, distance = scored_closes(strings, n_types)
  keep = (depth > 0) & (depth <= max_key_depth)
  bucket = np.searchsorted(distance_edges, distance[keep], side="right") - 1
  counts = np.zeros((max_key_depth + 1, len(distance_edges)), np.int64)
  np.add.at(counts, (depth[keep], bucket), 1)
  return counts


def distance_labels() -> list[str]:
  e = DISTANCE_EDGES
  return [f"{a}-{b - 1}" for a, b in zip(e, e[1:])] + [f"{e[-1]}+"]


def segment_structures(ids: np.ndarray, n_types: int) -> list[bytes]:
  """The skeleton (types erased) of each top-level segment, e.g. `(a (b b) a) (c c)` ->
  [b'(())', b'()']. A segment runs from one empty stack to the next."""
  skeleton = np.where(ids < n_types, ord("("), ord(")")).astype(np.uint8).tobytes()
  ends = np.flatnonzero(depth_after(ids, n_types) == 0) + 1
  starts = np.concatenate([[0], ends[:-1]])
  return [skeleton[s:e] for s, e in zip(starts, ends)]


def is_valid(ids: np.ndarray, n_types: int, depth_cap: int | None = None) -> bool:
  """True when `ids` is a balanced, well-typed Dyck string within `depth_cap`."""
  stack: list[int] = []
  for i in ids.tolist():
    if i < n_types:
      stack.append(i)
      if depth_cap is not None and len(stack) > depth_cap:
        return False
    elif not stack or stack.pop() != i - n_types:
      return False
  return not stack


# ----------------------------------------------------------------------------------------
# Text format (Murty/Yao): `(a (b b) a)`, one string per line, no START/END.


def to_text(ids: np.ndarray, vocab: Vocab) -> str:
  tokens = vocab.tokens()
  return " ".join(tokens[i] for i in ids.tolist())


def from_text(line: str, vocab: Vocab) -> np.ndarray:
  """Parses one line; START/END, if present, are dropped. Raises ValueError on bad tokens."""
  index = {t: i for i, t in enumerate(vocab.tokens()[:2 * vocab.n_types])}
  words = [w for w in line.split() if w not in ("START", "END")]
  unknown = [w for w in words if w not in index]
  if unknown:
    raise ValueError(f"unknown token {unknown[0]!r} for k={vocab.n_types} bracket types")
  return np.array([index[w] for w in words], np.int32)


def read_text(path: str, vocab: Vocab) -> list[np.ndarray]:
  with open(path, encoding="utf-8") as f:
    return [from_text(line, vocab) for line in f if line.strip()]


def read_split(path: str, vocab: Vocab, max_length: int) -> list[np.ndarray]:
  """A test split made elsewhere, in the text format: every line a balanced, well-typed
  string of at most `max_length` brackets. ValueError naming the file and line otherwise."""
  strings = []
  try:
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          ids = from_text(line, vocab)
        except ValueError as e:
          raise ValueError(f"{path}:{number}: {e}") from None
        if not is_valid(ids, vocab.n_types):
          raise ValueError(f"{path}:{number}: not a balanced, well-typed Dyck string")
        if len(ids) > max_length:
          raise ValueError(f"{path}:{number}: {len(ids)} brackets, more than the model's "
                           f"{max_length}")
        strings.append(ids)
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f"cannot read {path!r}: {getattr(e, 'strerror', None) or e}") from None
  if not strings:
    raise ValueError(f"{path} holds no strings")
  return strings
