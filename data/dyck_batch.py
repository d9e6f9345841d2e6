"""Dyck strings as fixed-shape model inputs, with what evaluation needs at every position.

Position p of a sequence reads input token p (START, then the brackets) and predicts
target p (the brackets, then END). Everything here is vectorized over strings and positions;
the only Python loop runs over depth levels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from data import dyck

# Scoring conventions (which positions count, and how a prediction is judged):
#   murty      - before each closing bracket whose matching open is >= MIN_DISTANCE tokens
#                back; correct iff the argmax over closing brackets is the gold close.
#   all_closes - before every closing bracket; argmax over closing brackets.
#   full_vocab - before every closing bracket; argmax over the whole vocabulary (Wen et al.).
#   yao        - every position with a non-empty stack; correct iff the gold close holds
#                > 0.8 of the probability mass on closing brackets (Yao et al. 2021).
SCORINGS = ("murty", "all_closes", "full_vocab", "yao")
MIN_DISTANCE = dyck.MIN_DISTANCE


@dataclasses.dataclass(frozen=True)
class DyckBatch:
  """N strings padded to L positions. `gold` is the close that matches the top of the stack
  (-1 when the stack is empty); `distance` is the close's distance to its open (0 elsewhere);
  `depth` is the stack depth when the target is predicted."""

  inputs: np.ndarray  # int32[N, L]
  targets: np.ndarray  # int32[N, L], PAD where there is no token
  gold: np.ndarray  # int32[N, L]
  depth: np.ndarray  # int32[N, L]
  distance: np.ndarray  # int32[N, L]

  def __len__(self) -> int:
    return self.inputs.shape[0]

  def scored(self, scoring: str, n_types: int) -> np.ndarray:
    """bool[N, L]: the positions the scoring convention counts."""
    is_close = (self.targets >= n_types) & (self.targets < 2 * n_types)
    if scoring == "murty":
      return is_close & (self.distance >= MIN_DISTANCE)
    if scoring in ("all_closes", "full_vocab"):
      return is_close
    if scoring == "yao":
      return self.gold >= 0
    raise ValueError(f"unknown scoring {scoring!r}; choose one of {', '.join(SCORINGS)}")

  def take(self, index) -> "DyckBatch":
    return DyckBatch(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))


def encode(strings: Sequence[np.ndarray], vocab: dyck.Vocab, seq_len: int) -> DyckBatch:
  """Pads `strings` (each of at most seq_len - 1 brackets) into one fixed-shape batch."""
  k = vocab.n_types
  n = len(strings)
  lengths = np.array([len(s) for s in strings], np.int64)
  if n and lengths.max() + 1 > seq_len:
    raise ValueError(f"a string of {lengths.max()} brackets does not fit {seq_len} positions")
  targets = np.full((n, seq_len), vocab.pad, np.int32)
  rows, cols = np.nonzero(np.arange(seq_len)[None, :] < lengths[:, None])
  if n:
    targets[rows, cols] = np.concatenate(strings)
  targets[np.arange(n), lengths] = vocab.end
  inputs = np.concatenate([np.full((n, 1), vocab.start, np.int32), targets[:, :-1]], axis=1)
  inputs[inputs == vocab.end] = vocab.pad

  is_close = (targets >= k) & (targets < 2 * k)
  # Stack depth at the moment target p is predicted, and the open on top of the stack then.
  depth_before, top = dyck.stack_tops(targets, k)
  positions = np.arange(seq_len)[None, :]
  has_top = top >= 0
  open_type = np.take_along_axis(targets, np.maximum(top, 0), axis=1)
  gold = np.where(has_top, open_type + k, -1).astype(np.int32)
  distance = np.where(is_close, positions - top, 0).astype(np.int32)
  return DyckBatch(inputs=inputs, targets=targets, gold=gold,
                   depth=depth_before, distance=distance)


class LengthBucketSampler:
  """Training batches drawn uniformly (with replacement) from the training strings, padded
  to the smallest bucket length that holds them: a few fixed shapes, little padding.

  Batch `step` depends only on (seed, step), so training can resume anywhere."""

  def __init__(self, strings: Sequence[np.ndarray], vocab: dyck.Vocab, seq_len: int,
               batch_size: int, seed: int, buckets: Sequence[int] = (32, 64)):
    lengths = np.array([len(s) + 1 for s in strings])  # positions each string needs
    edges = sorted({b for b in buckets if b < seq_len} | {seq_len})
    bucket_of = np.searchsorted(edges, lengths)
    self.buckets = []
    for b, width in enumerate(edges):
      members = [strings[i] for i in np.flatnonzero(bucket_of == b)]
      if members:
        self.buckets.append(encode(members, vocab, width))
    sizes = np.array([len(b) for b in self.buckets], np.float64)
    self.probs = sizes / sizes.sum()
    self.batch_size = batch_size
    self.seed = seed

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.seed, step])
    bucket = self.buckets[rng.choice(len(self.buckets), p=self.probs)]
    rows = rng.integers(len(bucket), size=self.batch_size)
    return {"inputs": bucket.inputs[rows], "targets": bucket.targets[rows]}
