"""What an evaluation of a split adds up to, and the metrics and intervals made from it.

The faithfulness program (`proxies.program`) returns sums, per sequence and per bucket of
each group; `SplitResult` holds a split's, `derive` turns sums into metrics (agreement,
accuracies, divergences), and `SplitResult.bootstrap` resamples the per-sequence sums for
percentile intervals. Everything here is numpy, float64.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping

import numpy as np

# Sums returned by the program; [B] (or per group [G]) for the model, [P, B] ([P, G]) for
# the proxies. `both_wrong` counts scored positions where model and proxy both err.
MODEL_SUMS = ("n_scored", "n_query", "correct_model", "nll_model")
PROXY_SUMS = ("correct_proxy", "agree", "both_wrong", "tv", "kl", "attention_jsd")
SUMS = MODEL_SUMS + PROXY_SUMS
SEQUENCE_GROUP_SUMS = ("n_scored", "agree")  # what a group kept per string holds


def derive(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Metrics from sums whose MODEL_SUMS have shape [...] and PROXY_SUMS [P, ...]; each
  metric comes out [P, ...] (NaN where nothing was counted).

  bits_model: the model's cross-entropy on the gold token, in bits per scored position (bits
  per character for code); shared_errors: of the model's errors, the fraction the proxy
  makes too (a proxy that explains the model's mistakes scores 1); error_overlap: the
  Jaccard index of the two error sets (1 when model and proxy err on exactly the same
  positions)."""
  s = {k: np.asarray(v, np.float64) for k, v in sums.items()}
  n, shape = s["n_scored"], s["agree"].shape
  model_wrong, proxy_wrong = n - s["correct_model"], n - s["correct_proxy"]
  with np.errstate(invalid="ignore", divide="ignore"):
    return {
        "accuracy_model": np.broadcast_to(s["correct_model"] / n, shape),
        "bits_model": np.broadcast_to(s["nll_model"] / n / np.log(2), shape),
        "accuracy_proxy": s["correct_proxy"] / n,
        "agreement": s["agree"] / n,
        "attention_jsd": s["attention_jsd"] / s["n_query"],
        "tv": s["tv"] / n,
        "kl": s["kl"] / n,
        "shared_errors": s["both_wrong"] / model_wrong,
        "error_overlap": s["both_wrong"] / (model_wrong + proxy_wrong - s["both_wrong"]),
        "n": np.broadcast_to(n, shape),
    }


def _rows(metrics_: dict[str, np.ndarray], index) -> dict:
  """One plain dict of metrics (floats, NaN as None so JSON stays JSON; n as int)."""
  row = {}
  for name, values in metrics_.items():
    v = float(values[index])
    row[name] = int(v) if name == "n" else (None if np.isnan(v) else v)
  return row


BOOTSTRAP_METRICS = ("agreement", "accuracy_proxy", "accuracy_model", "attention_jsd")


def resample_counts(n: int, n_resamples: int, seed: int,
                    clusters: np.ndarray | None = None) -> np.ndarray:
  """[R, N] float64: how often each of n strings is drawn in each bootstrap resample (with
  replacement). With `clusters` ([N] ids, e.g. the file each window comes from), whole
  clusters are drawn instead: strings of one cluster are not independent, and resampling
  them alone would make an interval too narrow."""
  rng = np.random.default_rng(seed)
  if clusters is None:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)
  _, cluster_N = np.unique(np.asarray(clusters), return_inverse=True)
  c = cluster_N.max() + 1
  return rng.multinomial(c, np.full(c, 1.0 / c), size=n_resamples)[:, cluster_N].astype(
      np.float64)


@dataclasses.dataclass
class SplitResult:
  """Sums for one split: `sequence` per string (MODEL_SUMS [N], PROXY_SUMS [P, N]), per
  group per bucket (MODEL_SUMS [G], PROXY_SUMS [P, G]) and, for the groups the program kept
  per string (`sequence_groups`), per string per bucket in `by_sequence` (SEQUENCE_GROUP_SUMS:
  n_scored [N, G], agree [P, N, G]): what intervals over strings of a bucket need."""

  sequence: dict[str, np.ndarray]
  groups: dict[str, dict[str, np.ndarray]]
  by_sequence: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)

  @property
  def size(self) -> int:
    return self.sequence["agree"].shape[0]

  @property
  def n_strings(self) -> int:
    return self.sequence["n_scored"].shape[-1]

  def summary(self) -> list[dict]:
    """One dict of metrics per sweep entry."""
    m = derive({k: v.sum(-1) for k, v in self.sequence.items()})
    return [_rows(m, p) for p in range(self.size)]

  def by_group(self, group: str) -> list[list[dict]]:
    """[sweep entry][bucket] -> dict of metrics."""
    m = derive(self.groups[group])
    n_buckets = m["agreement"].shape[-1]
    return [[_rows(m, (p, g)) for g in range(n_buckets)] for p in range(self.size)]

  def stratum(self, group: str, buckets) -> list[dict]:
    """[sweep entry] -> dict of metrics over the union of `buckets` of `group` (e.g. every
    close deeper than the training depth)."""
    m = derive({k: v[..., list(buckets)].sum(-1) for k, v in self.groups[group].items()})
    return [_rows(m, p) for p in range(self.size)]

  def bootstrap(self, n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
                clusters: np.ndarray | None = None) -> list[dict]:
    """Percentile intervals over strings resampled with replacement, per sweep entry:
    {'<metric>_lo': ..., '<metric>_hi': ...} for BOOTSTRAP_METRICS. With `clusters` ([N]
    ids, e.g. the file each window comes from), whole clusters are resampled instead:
    strings of one cluster are not independent, and resampling them alone would make the
    interval too narrow."""
    n = self.n_strings
    if n == 0:
      return [{} for _ in range(self.size)]
    counts_RxN = resample_counts(n, n_resamples, seed, clusters)
    m = derive({k: v.astype(np.float64) @ counts_RxN.T for k, v in self.sequence.items()})
    tail = 100 * (1 - level) / 2
    out = [{} for _ in range(self.size)]
    for name in BOOTSTRAP_METRICS:
      with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a metric never measured: all NaN
        lo_P, hi_P = np.nanpercentile(m[name], [tail, 100 - tail], axis=-1)
      for p in range(self.size):
        out[p][f"{name}_lo"] = None if np.isnan(lo_P[p]) else float(lo_P[p])
        out[p][f"{name}_hi"] = None if np.isnan(hi_P[p]) else float(hi_P[p])
    return out
