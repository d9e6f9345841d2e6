"""The depth finding, deconfounded: how much of a proxy's gap past the training depth is
about depth, and how much about the long strings and long spans that deep closes come with.

A close deeper than the training depth m sits in a long string, usually far from its open,
so the plain depth gap mixes three factors. Each close of the reproduction's splits is
also counted in a (key depth, distance, string length) cell (group
`depth_distance_length`), so the gap can be read within cells:

  total     agreement(iid, key depth 1..m-1) - agreement(unseen_depth, key depth > m);
  matched   agreement of shallow closes (key depth 1..m-1, from unseen_depth and its
            long_shallow control) reweighted to the deep closes' distribution over
            (distance, length) cells, minus agreement of those deep closes: the part of the
            gap that depth alone explains;
  rest      total - matched: the part already there in shallow closes as long and as
            far from their opens (length and span).

Deep closes in a cell without shallow closes drop out of `matched` (`coverage` says which
fraction is kept). The same decomposition is taken of the model's own accuracy. Every
number is computed per seed and reported as a mean with a Student-t interval over seeds.

`margin_matched` does the same for the model's confidence (group `margin`): the gap
between iid and a split within bins of the model's top-1 margin, reweighted to the split's
margins, so that a proxy breaking is told apart from a model so unsure that any
perturbation flips it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from experiments import aggregate

CELLS = "depth_distance_length"
SHALLOW_SPLITS = ("unseen_depth", "long_shallow")  # where shallow closes of long strings are


def _cells(group_rows: Iterable[dict], splits: Sequence[str], group: str = CELLS
           ) -> dict[tuple, dict[tuple, list[float]]]:
  """(seed, setting) -> bucket label -> [n, agree, correct_model, correct_proxy] sums."""
  out: dict[tuple, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(
      lambda: [0.0, 0.0, 0.0, 0.0]))
  for r in group_rows:
    if r["group"] != group or r["split"] not in splits or not r["n"]:
      continue
    s = out[(r["model_seed"], aggregate.setting(r))][r["bucket"]]
    n = r["n"]
    s[0] += n
    s[1] += r["agreement"] * n
    s[2] += r["accuracy_model"] * n
    s[3] += r["accuracy_proxy"] * n
  return out


def _depth(label: str) -> int:
  return int(label.split(" / ")[0])


def _rest(label: str) -> str:
  return label.split(" / ", 1)[1]


METRICS = {"agreement": 1, "accuracy_model": 2, "accuracy_proxy": 3}


def decomposition(group_rows: list[dict], train_depth: int) -> dict[aggregate.Setting, dict]:
  """setting -> {metric: {'total', 'matched', 'rest': (mean, lo, hi)}, 'coverage': ...,
  'n_deep': mean count} for metric in agreement, accuracy_model, accuracy_proxy."""
  m = train_depth
  deep = _cells(group_rows, ["unseen_depth"])
  shallow = _cells(group_rows, list(SHALLOW_SPLITS))
  iid = _cells(group_rows, ["iid"])
  per_seed: dict[aggregate.Setting, dict[str, list[float]]] = defaultdict(
      lambda: defaultdict(list))
  for key, cells in deep.items():
    seed, s = key
    deep_by_rest: dict[str, list[float]] = defaultdict(lambda: [0.0] * 4)
    for label, sums in cells.items():
      if _depth(label) > m:
        deep_by_rest[_rest(label)] = [a + b for a, b in zip(deep_by_rest[_rest(label)], sums)]
    shallow_by_rest: dict[str, list[float]] = defaultdict(lambda: [0.0] * 4)
    for label, sums in shallow.get(key, {}).items():
      if 1 <= _depth(label) < m:
        shallow_by_rest[_rest(label)] = [a + b for a, b in
                                         zip(shallow_by_rest[_rest(label)], sums)]
    iid_sums = [0.0] * 4
    for label, sums in iid.get(key, {}).items():
      if 1 <= _depth(label) < m:
        iid_sums = [a + b for a, b in zip(iid_sums, sums)]
    n_deep = sum(v[0] for v in deep_by_rest.values())
    covered = {c: v for c, v in deep_by_rest.items() if shallow_by_rest.get(c, [0])[0] > 0}
    n_covered = sum(v[0] for v in covered.values())
    if not n_deep or not n_covered or not iid_sums[0]:
      continue
    out = per_seed[s]
    out["coverage"].append(n_covered / n_deep)
    out["n_deep"].append(n_deep)
    for metric, i in METRICS.items():
      deep_all = sum(v[i] for v in deep_by_rest.values()) / n_deep
      deep_cov = sum(v[i] for v in covered.values()) / n_covered
      matched_shallow = sum(v[0] / n_covered * shallow_by_rest[c][i] / shallow_by_rest[c][0]
                            for c, v in covered.items())
      total = iid_sums[i] / iid_sums[0] - deep_all
      out[f"{metric} total"].append(total)
      out[f"{metric} matched"].append(matched_shallow - deep_cov)
      out[f"{metric} rest"].append(total - (matched_shallow - deep_cov))
  return {s: {name: aggregate.seed_interval(values) for name, values in d.items()}
          for s, d in per_seed.items()}


def margin_matched(group_rows: list[dict], splits: Sequence[str], group: str = "margin"
                   ) -> dict[tuple[aggregate.Setting, str], dict[str, tuple]]:
  """(setting, split) -> {'raw', 'matched'}: agreement(iid) - agreement(split), pooled and
  within the model's margin bins reweighted to the split's (bins with no iid position drop
  out), intervals over seeds."""
  cells = {split: _cells(group_rows, [split], group) for split in ("iid", *splits)}
  per_seed: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
  for split in splits:
    for key, bins in cells[split].items():
      reference = cells["iid"].get(key)
      if not reference:
        continue
      rate = lambda sums: {b: (v[0], v[1] / v[0]) for b, v in sums.items() if v[0]}
      raw, matched = aggregate.matched_difference(rate(reference), rate(bins))
      if matched is None:
        continue
      out = per_seed[(key[1], split)]
      out["raw"].append(raw)
      out["matched"].append(matched)
  return {k: {name: aggregate.seed_interval(v) for name, v in d.items()}
          for k, d in per_seed.items()}


def summary(group_rows: list[dict], splits: Sequence[str], train_depth: int) -> dict:
  """Both analyses as plain JSON: lists of {layer, proxy, setting label, ...intervals}."""
  def label(s):
    return {"proxy": s[0], "layer": s[1], "value": s[2], "setting": aggregate.setting_label(s)}
  as_list = lambda interval: [round(float(x), 6) for x in interval]
  depth = [{**label(s), **{k: as_list(v) for k, v in d.items()}}
           for s, d in decomposition(group_rows, train_depth).items()]
  margin = [{**label(s), "split": split, **{k: as_list(v) for k, v in d.items()}}
            for (s, split), d in margin_matched(
                group_rows, [x for x in splits if x != "iid"]).items()]
  return {"train_depth": train_depth, "decomposition": depth, "margin_matched": margin}
