"""The Dyck datasets: `DyckConfig`, the splits it determines and how each is drawn from the
sampler of `data/dyck.py` (train, the in-distribution and structure splits, unseen_depth
stratified by depth, its validation twin, and the long-shallow control matched to it in
length and span).

`python -m experiments.dyck_data --help` prints any split in the Murty/Yao text format.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import tqdm

from data import dyck


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
# Splits


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
  train = dyck.sample(_rng(c.seed, "train"), c.n_train, depth_cap=c.max_depth, progress=bar.update,
                 **draw)
  train_strings = {s.tobytes() for s in train}
  seen = {struct for s in train for struct in dyck.segment_structures(s, c.n_types)}

  def fresh(candidates: Iterable[np.ndarray]):
    return (s for s in candidates if s.tobytes() not in train_strings)

  def stream(split: str, depth_cap: int) -> Iterator[np.ndarray]:
    bar.set_postfix_str(split)
    rng = _rng(c.seed, split)
    for _ in range(0, MAX_CANDIDATES_PER_STRING * c.n_test, 4096):
      yield from dyck.sample(rng, 4096, depth_cap=depth_cap, **draw)

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
    if all(x in seen for x in dyck.segment_structures(s, c.n_types)):
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
       if dyck.max_depth(s, c.n_types) > c.max_depth), "unseen_depth_plain")
  bar.set_postfix_str("long_shallow")
  splits["long_shallow"] = take(fresh(long_shallow(c, splits["unseen_depth"])), "long_shallow")
  return splits


def _chunks(items: Iterable, size: int) -> Iterator[list]:
  iterator = iter(items)
  while chunk := list(itertools.islice(iterator, size)):
    yield chunk


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
    yield from (s for s in candidates if dyck.max_depth(s, c.n_types) > c.max_depth)
    return
  share = {d: c.n_test // len(strata) + (i < c.n_test % len(strata))
           for i, d in enumerate(strata)}
  for chunk in _chunks(candidates, 4096):
    deepest = dyck.scored_key_depths(chunk, c.n_types).max(axis=1, initial=0)
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
    for s in dyck.sample(rng, 4096, n_types=c.n_types, depth_cap=c.max_depth,
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
  profile = dyck.close_counts(target, c.n_types, m).astype(float)
  pilot_n = min(c.n_test, 500)
  budget = MAX_CANDIDATES_PER_STRING * c.n_test

  def mismatch(p_low: float) -> float:
    rng = np.random.default_rng([c.seed, SPLITS.index("long_shallow") + 1, 1])
    pilot = _length_matched(c, rng, control_close_prob(c, p_low), share, pilot_n, budget)
    if len(pilot) < pilot_n:
      return np.inf
    return total_variation(dyck.close_counts(pilot, c.n_types, m), profile)

  p_low = min(CONTROL_CLOSE_PROBS, key=mismatch)
  yield from _length_matched(c, _rng(c.seed, "long_shallow"), control_close_prob(c, p_low),
                             share, c.n_test, budget)


def match_report(control: Sequence[np.ndarray], target: Sequence[np.ndarray], c: DyckConfig
                 ) -> dict:
  """How close the control is to its target: total variation of the length histograms
  (LENGTH_EDGES) and of the key depth x distance profiles of closes at key depth <= m."""
  hist = lambda strings: np.bincount(length_bin([len(s) for s in strings]),
                                     minlength=len(LENGTH_EDGES)).astype(float)
  prof = lambda strings: dyck.close_counts(strings, c.n_types, c.max_depth).astype(float)
  return {"length_tv": round(total_variation(hist(control), hist(target)), 4),
          "key_depth_distance_tv": round(total_variation(prof(control), prof(target)), 4),
          "mean_length": [round(float(np.mean([len(s) for s in x])), 2)
                          for x in (control, target)]}


# ----------------------------------------------------------------------------------------
# Statistics


def split_stats(strings: Sequence[np.ndarray], n_types: int) -> dict:
  lengths = np.array([len(s) for s in strings])
  depths = np.array([dyck.max_depth(s, n_types) for s in strings])
  key_depths = dyck.scored_key_depths(strings, n_types)
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
  counts = dyck.close_counts(strings, n_types, max(dyck.max_depth(s, n_types) for s in strings))
  labels = dyck.distance_labels()
  return {f"{d} / {labels[j]}": int(counts[d, j])
          for d in range(counts.shape[0]) for j in range(counts.shape[1]) if counts[d, j]}
