"""Evaluation rows of several seeds -> means with confidence intervals across seeds.

Rows are the plain dicts of `pipeline.evaluation` with a `model_seed` added. A setting is
(proxy, layer, value), value being the rank or K (None for kinds without a sweep).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import scipy.stats

import proxies

Setting = tuple[str, int, int | None]


def families() -> tuple[str, ...]:
  """The proxy families, in table order: every registered kind (`proxies.KINDS`, the one
  list of kinds), and '<kind> separate' beside each kind that can fit its sites one at a
  time (`family`)."""
  out = []
  for kind in proxies.KINDS.values():
    out += [kind.name] + ([f"{kind.name} separate"] if "separate" in kind.options else [])
  return tuple(out)


def sweep_name(family_: str) -> str | None:
  """What a family's sweep values are called in a label (`ProxyKind.sweep_name`)."""
  return proxies.KINDS[family_.split()[0]].sweep_name


def family(row: dict) -> str:
  """The proxy kind, and 'separate' when its sites were fitted one at a time (k-means
  clusters queries and keys jointly by default): the two are different proxies."""
  separate = row.get("separate") in (True, "True")  # a bool, or its text in a CSV row
  return f"{row['proxy']} separate" if separate else row["proxy"]


def setting(row: dict) -> Setting:
  sweep = proxies.KINDS[row["proxy"]].sweep
  return family(row), row["layer"], row.get(sweep) if sweep else None


def setting_label(s: Setting) -> str:
  proxy, _, value = s
  return proxy if value is None else f"{proxy} {sweep_name(proxy)} {value}"


def seed_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
  """(mean, lo, hi): Student-t interval of the mean over seeds (lo = hi = mean for 1 seed)."""
  v = np.asarray([x for x in values if x is not None and not math.isnan(x)], np.float64)
  if v.size == 0:
    return math.nan, math.nan, math.nan
  mean = float(v.mean())
  if v.size == 1:
    return mean, mean, mean
  half = float(scipy.stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
  return mean, mean - half, mean + half


def matched_difference(reference: Mapping[object, tuple[float, float]],
                       other: Mapping[object, tuple[float, float]]
                       ) -> tuple[float | None, float | None]:
  """(raw, matched) differences reference - other of a rate given per bin as (n, rate):
  raw pools every bin; matched takes the difference within each bin and averages it with
  `other`'s weights, over the bins `reference` also has (None where nothing is left)."""
  def pooled(bins):
    n = sum(b[0] for b in bins.values())
    return sum(b[0] * b[1] for b in bins.values()) / n if n else None
  raw_ref, raw_other = pooled(reference), pooled(other)
  raw = None if raw_ref is None or raw_other is None else raw_ref - raw_other
  kept = {b: v for b, v in other.items() if v[0] and reference.get(b, (0, 0))[0]}
  n_kept = sum(v[0] for v in kept.values())
  if not n_kept:
    return raw, None
  return raw, sum(v[0] / n_kept * (reference[b][1] - v[1]) for b, v in kept.items())


def by_seed(rows: Iterable[dict], key: Callable[[dict], object],
            value: Callable[[dict], float]) -> dict[object, dict[int, float]]:
  """key -> {model_seed: value}."""
  out: dict[object, dict[int, float]] = defaultdict(dict)
  for row in rows:
    out[key(row)][row["model_seed"]] = value(row)
  return out


def across_seeds(rows: Iterable[dict], key: Callable[[dict], object], metric: str
                 ) -> dict[object, tuple[float, float, float]]:
  """key -> (mean, lo, hi) of `metric` over seeds."""
  return {k: seed_interval(list(v.values()))
          for k, v in by_seed(rows, key, lambda r: r[metric]).items()}


def gaps(rows: list[dict], reference: str = "iid", metric: str = "agreement",
         reference_metric: str | None = None) -> dict[tuple[Setting, str], tuple]:
  """(setting, split) -> interval over seeds of reference_metric(reference split) -
  metric(split); both metrics are agreement by default. E.g. metric='agreement_deep',
  reference_metric='agreement_shallow': the gap between closes past the training depth
  and the in-distribution closes of iid strings."""
  agreement = by_seed(rows, lambda r: (setting(r), r["split"]), lambda r: r.get(metric))
  references = by_seed(rows, lambda r: (setting(r), r["split"]),
                       lambda r: r.get(reference_metric or metric))
  out = {}
  for (s, split), per_seed in agreement.items():
    ref = references.get((s, reference), {})
    diffs = [ref[seed] - a for seed, a in per_seed.items()
             if seed in ref and a is not None and ref[seed] is not None]
    out[(s, split)] = seed_interval(diffs)
  return out


def accuracy_differences(rows: list[dict]) -> dict[tuple[Setting, str], tuple]:
  """(setting, split) -> interval over seeds of accuracy(proxy) - accuracy(model): below 0
  the proxy under-estimates the model there, above 0 it over-estimates it."""
  diffs = by_seed(rows, lambda r: (setting(r), r["split"]),
                  lambda r: _minus(r["accuracy_proxy"], r["accuracy_model"]))
  return {k: seed_interval(list(v.values())) for k, v in diffs.items()}


def _minus(a, b):
  return None if a is None or b is None else a - b


def verdict(interval: tuple[float, float, float]) -> str:
  """Under 0 with confidence, over 0 with confidence, or neither."""
  mean, lo, hi = interval
  if math.isnan(mean):
    return "–"
  if hi < 0:
    return "under-estimates"
  if lo > 0:
    return "over-estimates"
  return "matches"


def pooled_buckets(group_rows: Iterable[dict], group: str,
                   splits: Sequence[str] | None = None) -> list[dict]:
  """Pools one group's buckets over splits, per seed and setting: rows of model_seed,
  setting, bucket, n and the count-weighted metrics (accuracy_model, accuracy_proxy, agreement, tv, shared_errors)."""
  sums: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
  for row in group_rows:
    if row["group"] != group or (splits and row["split"] not in splits) or not row["n"]:
      continue
    s = sums[(row["model_seed"], setting(row), row["bucket"])]
    n = row["n"]
    s["n"] += n
    for m in ("accuracy_model", "accuracy_proxy", "agreement", "tv"):
      s[m] += row[m] * n
    model_wrong = (1 - row["accuracy_model"]) * n
    s["model_wrong"] += model_wrong
    s["both_wrong"] += (row["shared_errors"] or 0.0) * model_wrong
  out = []
  for (seed, setting_, bucket), s in sums.items():
    row = {"model_seed": seed, "setting": setting_, "bucket": bucket, "n": s["n"]}
    row.update({m: s[m] / s["n"] for m in ("accuracy_model", "accuracy_proxy", "agreement", "tv")})
    row["shared_errors"] = s["both_wrong"] / s["model_wrong"] if s["model_wrong"] else None
    out.append(row)
  return out


def representative(rows: list[dict], proxy: str, layer: int, threshold: float = 0.9
                   ) -> Setting | None:
  """The simplest setting of a family that looks faithful in distribution: the smallest
  rank / K whose mean iid agreement reaches `threshold` (else the most faithful one)."""
  iid = across_seeds([r for r in rows if family(r) == proxy and r["layer"] == layer
                      and r["split"] == "iid"], setting, "agreement")
  if not iid:
    return None
  ordered = sorted(iid, key=lambda s: (s[2] is not None, s[2] or 0))
  for s in ordered:
    if iid[s][0] >= threshold:
      return s
  return max(ordered, key=lambda s: iid[s][0])


def pooled_interval(pooled: Iterable[dict], s: Setting, keep: Callable[[dict], bool],
                    value: Callable[[dict], float | None], weight: Callable[[dict], float]
                    ) -> tuple[float, float, float]:
  """Interval over seeds of the `weight`-weighted mean of `value` over the pooled buckets
  of setting `s` that `keep` selects (e.g. accuracy difference over depths > 10)."""
  per_seed: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
  for r in pooled:
    if r["setting"] == s and keep(r) and value(r) is not None:
      per_seed[r["model_seed"]][0] += value(r) * weight(r)
      per_seed[r["model_seed"]][1] += weight(r)
  return seed_interval([total / w for total, w in per_seed.values() if w])
