"""Dyck-(k, m) strings: the Hewitt/Murty sampler, segment structures, the splits.

A string is an int array of bracket ids (no START/END): open bracket of type j is id j,
its close is id k + j (Yao's order). `Vocab` adds START, END and PAD and spells tokens as
Murty/Yao do: open `(a`, close `a)`.

The sampler is the Hewitt et al. (2020) automaton, vectorized over many strings at once:
- empty stack: END with probability 1/2, else one of k opens uniformly (END drawn before
  `min_length` is redrawn, i.e. an open is forced);
- stack at `max_depth`: close the top;
- otherwise: close the top with probability 1/2, else one of k opens uniformly.
Strings longer than `max_length` brackets are rejected whole.

`python -m experiments.dyck_data --help` prints any split in the Murty/Yao text format.
"""

from __future__ import annotations

import dataclasses
import itertools
import string
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import tqdm

SPLITS = ("train", "iid", "seen_struct", "unseen_struct_short", "unseen_struct_long",
          "unseen_depth", "val_depth", "long_shallow", "unseen_depth_plain", "val_iid")
# What a model is selected on (checkpoints, thresholds): never reported as a test split.
VALIDATION_SPLITS = ("val_iid", "val_depth")
TEST_SPLITS = tuple(s for s in SPLITS[1:] if s not in VALIDATION_SPLITS)
# The control for unseen_depth: as long, with spans as long, but never deeper than m.
CONTROL_SPLITS = {"long_shallow": "unseen_depth"}


@dataclasses.dataclass(frozen=True)
class DyckConfig:
  """Everything that determines a Dyck dataset; the dataset is a pure function of it."""

  n_types: int = 20  # k: bracket types
  max_depth: int = 10  # m: training depth cap
  min_length: int = 4  # in brackets; END before it is redrawn
  max_length: int = 126  # in brackets; longer samples are rejected (START+126+END = 128)
  n_train: int = 200_000
  n_test: int = 2_000  # strings per test split
  short_length: int = 32  # unseen_struct_short has length <= this, _long has length > this
  ood_depth_cap: int = 20  # depth cap of the sampler behind unseen_depth
  seed: int = 0

  def __post_init__(self):
    deepest = self.max_length // 2 - 1  # deeper strings must still fit in max_length
    checks = [
        (1 <= self.n_types <= 4096, f"types must be in 1..4096, got {self.n_types}"),
        (self.max_length <= 4096, f"max_length must be at most 4096, got {self.max_length}"),
        (1 <= self.max_depth <= deepest,
         f"depth must be in 1..{deepest} (max_length={self.max_length}), got {self.max_depth}"),
        (2 <= self.min_length <= self.max_length,
         f"min_length must be in 2..max_length={self.max_length}, got {self.min_length}"),
        (self.max_depth < self.ood_depth_cap <= self.max_length // 2,
         f"ood_depth_cap must be in {self.max_depth + 1}..{self.max_length // 2}, "
         f"got {self.ood_depth_cap}"),
        (self.min_length <= self.short_length < self.max_length,
         f"short_length must be in {self.min_length}..{self.max_length - 1}, "
         f"got {self.short_length}"),
        (0 <= self.seed < 2**32, f"seed must be in 0..{2**32 - 1}, got {self.seed}"),
        (1 <= self.n_train <= 10**8 and 1 <= self.n_test <= 10**7,
         f"n_train must be in 1..{10**8} and n_test in 1..{10**7}"),
    ]
    for ok, message in checks:
      if not ok:
        raise ValueError(message)

  @property
  def name(self) -> str:
    """A filesystem-safe name that changes whenever the data would."""
    return (f"k{self.n_types}_m{self.max_depth}_len{self.min_length}-{self.max_length}"
            f"_n{self.n_train}-{self.n_test}_short{self.short_length}"
            f"_ood{self.ood_depth_cap}_seed{self.seed}")


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
# Splits


# Murty et al.'s scored positions: closes whose matching open is at least this far back.
MIN_DISTANCE = 10
# Distance buckets: a close whose open is d tokens back falls in [edge_i, edge_i+1).
DISTANCE_EDGES = (1, 5, 10, 20, 40, 80)

# Candidates drawn per requested test string before a split is declared unreachable (e.g.
# unseen short structures when training already covers every short skeleton).
MAX_CANDIDATES_PER_STRING = 500


class SplitError(ValueError):

  def __init__(self, split: str, found: int, config: DyckConfig):
    super().__init__(
        f"split {split!r} found only {found} of {config.n_test} strings in about "
        f"{MAX_CANDIDATES_PER_STRING * config.n_test} samples; this language is too small "
        f"for it: raise max_length, short_length or types, or lower n_train or n_test")


def _rng(seed: int, split: str) -> np.random.Generator:
  # One independent stream per split, so adding a split never changes another.
  return np.random.default_rng([seed, SPLITS.index(split) + 1])


def generate(config: DyckConfig) -> dict[str, list[np.ndarray]]:
  """Every split (SPLITS), deterministic in `config`. The default sizes take minutes on
  a CPU, so a progress bar counts the strings found (on a terminal only: tqdm's
  `disable=None`, so logs and tests stay clean)."""
  bar = tqdm.tqdm(total=config.n_train + len(TEST_SPLITS) * config.n_test,
                  desc="generating Dyck strings", unit=" strings", disable=None, leave=False)
  with bar:
    return _generate(config, bar)


def _generate(c: DyckConfig, bar: tqdm.tqdm) -> dict[str, list[np.ndarray]]:
  draw = dict(n_types=c.n_types, min_length=c.min_length, max_length=c.max_length)
  bar.set_postfix_str("train")
  train = sample(_rng(c.seed, "train"), c.n_train, depth_cap=c.max_depth, progress=bar.update,
                 **draw)
  train_strings = {s.tobytes() for s in train}
  seen = {struct for s in train for struct in segment_structures(s, c.n_types)}

  def fresh(candidates: Iterable[np.ndarray]):
    return (s for s in candidates if s.tobytes() not in train_strings)

  def stream(split: str, depth_cap: int) -> Iterator[np.ndarray]:
    bar.set_postfix_str(split)
    rng = _rng(c.seed, split)
    for _ in range(0, MAX_CANDIDATES_PER_STRING * c.n_test, 4096):
      yield from sample(rng, 4096, depth_cap=depth_cap, **draw)

  def take(candidates: Iterable[np.ndarray], split: str) -> list[np.ndarray]:
    found = []
    for s in itertools.islice(candidates, c.n_test):
      found.append(s)
      bar.update()
    if len(found) < c.n_test:
      raise SplitError(split, len(found), c)
    return found

  splits = {"train": train}
  splits["iid"] = take(fresh(stream("iid", c.max_depth)), "iid")
  test_iid = {s.tobytes() for s in splits["iid"]}
  splits["val_iid"] = take((s for s in fresh(stream("val_iid", c.max_depth))
                            if s.tobytes() not in test_iid), "val_iid")

  pools: dict[str, list[np.ndarray]] = {
      "seen_struct": [], "unseen_struct_short": [], "unseen_struct_long": []}
  for s in fresh(stream("seen_struct", c.max_depth)):
    if all(x in seen for x in segment_structures(s, c.n_types)):
      pool = "seen_struct"
    else:
      pool = "unseen_struct_short" if len(s) <= c.short_length else "unseen_struct_long"
    if len(pools[pool]) < c.n_test:
      pools[pool].append(s)
      bar.update()
    if all(len(p) == c.n_test for p in pools.values()):
      break
  for name, pool in pools.items():
    splits[name] = pool
    if len(pool) < c.n_test:
      raise SplitError(name, len(pool), c)

  splits["unseen_depth"] = take(deeper(c, stream("unseen_depth", c.ood_depth_cap), bar),
                                "unseen_depth")
  # Validation: the same distribution from its own stream, disjoint from unseen_depth.
  test_deep = {s.tobytes() for s in splits["unseen_depth"]}
  splits["val_depth"] = take(
      (s for s in deeper(c, stream("val_depth", c.ood_depth_cap), bar)
       if s.tobytes() not in test_deep), "val_depth")
  # The paper's description: deeper than m, not stratified (most deep closes at m+1..m+3).
  splits["unseen_depth_plain"] = take(
      (s for s in stream("unseen_depth_plain", c.ood_depth_cap)
       if max_depth(s, c.n_types) > c.max_depth), "unseen_depth_plain")
  bar.set_postfix_str("long_shallow")
  splits["long_shallow"] = take(fresh(long_shallow(c, splits["unseen_depth"])), "long_shallow")
  return splits


def deeper(c: DyckConfig, candidates: Iterable[np.ndarray], bar: tqdm.tqdm | None = None
           ) -> Iterator[np.ndarray]:
  """unseen_depth: strings with a Murty position deeper than the training depth m, an equal
  share of them for each depth of their deepest such close, m+1 .. ood_depth_cap-2.

  A plain sample deeper than m puts almost every deep close at m+1..m+3 (about 1 % of the
  scored positions at depth >= 14 for Dyck-(20, 10)); strata by the deepest scored close
  give every depth in the range hundreds of positions, since a scored close at depth D is
  enclosed by one at every depth below it. (At the cap's own depth a close is forced at
  distance 1, never scored; one just below it is too rare to fill a share, so the range
  stops at cap-2. With ood_depth_cap = m+1 no close past m is ever scored: plain strings
  deeper than m.)"""
  strata = range(c.max_depth + 1, c.ood_depth_cap - 1)
  if not strata:
    yield from (s for s in candidates if max_depth(s, c.n_types) > c.max_depth)
    return
  share = {d: c.n_test // len(strata) + (i < c.n_test % len(strata))
           for i, d in enumerate(strata)}
  for chunk in _chunks(candidates, 4096):
    deepest = scored_key_depths(chunk, c.n_types).max(axis=1, initial=0)
    for s, d in zip(chunk, deepest):
      if share.get(d, 0) > 0:
        share[d] -= 1
        yield s
    if bar is not None:
      bar.set_postfix_str("unseen_depth, still to find at depth " + " ".join(
          f"{d}:{n}" for d, n in share.items() if n))


# ----------------------------------------------------------------------------------------
# The long-shallow control

# Bins of string length (brackets) the control is matched to unseen_depth on.
LENGTH_EDGES = (0, 16, 32, 48, 64, 80, 96, 112)
# Close probabilities tried at depths m-4..m-1 (below: the automaton's 1/2): the lower, the
# longer a string lingers just under the cap, so the longer its strings and spans.
CONTROL_CLOSE_PROBS = (0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15)


def length_bin(lengths) -> np.ndarray:
  return np.searchsorted(LENGTH_EDGES, np.asarray(lengths), side="right") - 1


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


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
  p, q = p / max(p.sum(), 1e-12), q / max(q.sum(), 1e-12)
  return float(0.5 * np.abs(p - q).sum())


def control_close_prob(c: DyckConfig, p_low: float) -> np.ndarray:
  prob = np.full(c.max_depth + 1, 0.5)
  prob[max(1, c.max_depth - 4):c.max_depth] = p_low
  return prob


def _length_matched(c: DyckConfig, rng: np.random.Generator, close_prob: np.ndarray,
                    target_share: np.ndarray, n: int, budget: int) -> list[np.ndarray]:
  """`n` strings of the control sampler, as many in each length bin as `target_share`
  asks (quotas filled in order of generation, within `budget` candidates)."""
  quota = np.floor(target_share * n).astype(int)
  quota[np.argmax(target_share)] += n - quota.sum()
  found: list[np.ndarray] = []
  for _ in range(0, budget, 4096):
    for s in sample(rng, 4096, n_types=c.n_types, depth_cap=c.max_depth,
                    min_length=c.min_length, max_length=c.max_length, close_prob=close_prob):
      b = length_bin(len(s))
      if quota[b] > 0:
        quota[b] -= 1
        found.append(s)
    if len(found) == n:
      break
  return found


def long_shallow(c: DyckConfig, target: Sequence[np.ndarray]) -> Iterator[np.ndarray]:
  """long_shallow: depth <= m strings matched to `target` (unseen_depth) in length (its
  histogram over LENGTH_EDGES, by quotas) and, as far as the sampler allows, in the key
  depth x distance profile of its closes at key depth <= m: the close probability at depths
  m-4..m-1 is the one of CONTROL_CLOSE_PROBS whose length-matched pilot sample is closest
  to the target's profile (total variation), chosen on a pilot stream of its own."""
  m = c.max_depth
  lengths = length_bin([len(s) for s in target])
  share = np.bincount(lengths, minlength=len(LENGTH_EDGES)) / len(target)
  profile = close_counts(target, c.n_types, m).astype(float)
  pilot_n = min(c.n_test, 500)
  budget = MAX_CANDIDATES_PER_STRING * c.n_test

  def mismatch(p_low: float) -> float:
    rng = np.random.default_rng([c.seed, SPLITS.index("long_shallow") + 1, 1])
    pilot = _length_matched(c, rng, control_close_prob(c, p_low), share, pilot_n, budget)
    if len(pilot) < pilot_n:
      return np.inf
    return total_variation(close_counts(pilot, c.n_types, m), profile)

  p_low = min(CONTROL_CLOSE_PROBS, key=mismatch)
  yield from _length_matched(c, _rng(c.seed, "long_shallow"), control_close_prob(c, p_low),
                             share, c.n_test, budget)


def match_report(control: Sequence[np.ndarray], target: Sequence[np.ndarray], c: DyckConfig
                 ) -> dict:
  """How close the control is to its target: total variation of the length histograms
  (LENGTH_EDGES) and of the key depth x distance profiles of closes at key depth <= m."""
  hist = lambda strings: np.bincount(length_bin([len(s) for s in strings]),
                                     minlength=len(LENGTH_EDGES)).astype(float)
  prof = lambda strings: close_counts(strings, c.n_types, c.max_depth).astype(float)
  return {"length_tv": round(total_variation(hist(control), hist(target)), 4),
          "key_depth_distance_tv": round(total_variation(prof(control), prof(target)), 4),
          "mean_length": [round(float(np.mean([len(s) for s in x])), 2)
                          for x in (control, target)]}

def _chunks(items: Iterable, size: int) -> Iterator[list]:
  iterator = iter(items)
  while chunk := list(itertools.islice(iterator, size)):
    yield chunk


def split_stats(strings: Sequence[np.ndarray], n_types: int) -> dict:
  lengths = np.array([len(s) for s in strings])
  depths = np.array([max_depth(s, n_types) for s in strings])
  key_depths = scored_key_depths(strings, n_types)
  return {
      "count": len(strings),
      "length": {"min": int(lengths.min()), "mean": round(float(lengths.mean()), 3),
                 "max": int(lengths.max())},
      "depth": {"min": int(depths.min()), "mean": round(float(depths.mean()), 3),
                "max": int(depths.max())},
      "depth_histogram": {int(d): int(n) for d, n in zip(*np.unique(depths, return_counts=True))},
      # Murty positions (closes >= MIN_DISTANCE after their open) per key depth.
      "scored_closes_by_key_depth": {int(d): int(n) for d, n in enumerate(
          np.bincount(key_depths[key_depths > 0])) if n},
      "length_histogram": {f"{LENGTH_EDGES[b]}+": int(n) for b, n in enumerate(
          np.bincount(length_bin(lengths), minlength=len(LENGTH_EDGES))) if n},
      "scored_closes_by_key_depth_distance": _depth_distance_counts(strings, n_types),
  }


def _depth_distance_counts(strings: Sequence[np.ndarray], n_types: int) -> dict[str, int]:
  """'<key depth> / <distance bucket>' -> Murty positions there."""
  counts = close_counts(strings, n_types, max(max_depth(s, n_types) for s in strings))
  labels = distance_labels()
  return {f"{d} / {labels[j]}": int(counts[d, j])
          for d in range(counts.shape[0]) for j in range(counts.shape[1]) if counts[d, j]}


def distance_labels() -> list[str]:
  e = DISTANCE_EDGES
  return [f"{a}-{b - 1}" for a, b in zip(e, e[1:])] + [f"{e[-1]}+"]


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
