"""The reproduction's markdown report: tables of means with 95 % intervals over seeds."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from experiments import aggregate, depth_controls
from models import atomic

def _fmt(interval: tuple[float, float, float], digits: int = 3) -> str:
  mean, lo, hi = interval
  if math.isnan(mean):
    return "–"
  if lo == hi:
    return f"{mean:.{digits}f}"
  return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _representatives(rows: list[dict], layers: Sequence[int]) -> list[aggregate.Setting]:
  """Each family's representative setting on each layer, in table order."""
  chosen = [aggregate.representative(rows, family, layer)
            for layer in layers for family in aggregate.families()]
  return [s for s in chosen if s is not None]


def table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
  """A markdown table's lines."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return lines + ["| " + " | ".join(row) + " |" for row in body]


def model_section(rows: list[dict], splits: Sequence[str]) -> list[str]:
  # accuracy_model is the same for every setting of a seed; take one setting's rows.
  first = aggregate.setting(rows[0])
  mine = [r for r in rows if aggregate.setting(r) == first]
  acc = aggregate.across_seeds(mine, lambda r: r["split"], "accuracy_model")
  per_seed = aggregate.by_seed(mine, lambda r: r["split"], lambda r: r["accuracy_model"])
  seeds = sorted({r["model_seed"] for r in mine})
  body = [[split, _fmt(acc[split])] + [f"{per_seed[split][s]:.4f}" for s in seeds]
          for split in splits]
  for split, stratum, name in (("iid", "shallow", "iid, key depth < m"),
                               ("unseen_depth", "deep", "unseen_depth, key depth > m")):
    metric = f"accuracy_model_{stratum}"
    if any(r.get(metric) is not None for r in mine if r["split"] == split):
      stratum_rows = [r for r in mine if r["split"] == split]
      value = aggregate.by_seed(stratum_rows, lambda r: 0, lambda r: r[metric])[0]
      body.append([f"**{name}**", _fmt(aggregate.seed_interval(list(value.values())))]
                  + [f"{value[s]:.4f}" for s in seeds])
  return ["## The models", "",
          "Accuracy at scored positions (closing brackets at distance ≥ 10), mean over seeds "
          "with its 95 % interval, then each seed:", ""] + table(
              ["split", "accuracy"] + [f"seed {s}" for s in seeds], body) + [""]


def faithfulness_section(rows: list[dict], splits: Sequence[str], layers: Sequence[int]
                         ) -> list[str]:
  ood = [s for s in splits if s != "iid"]
  agreement = aggregate.across_seeds(rows, lambda r: (aggregate.setting(r), r["split"]),
                                     "agreement")
  jsd = aggregate.across_seeds(rows, lambda r: (aggregate.setting(r), r["split"]),
                               "attention_jsd")
  gap = aggregate.gaps(rows)
  deep = aggregate.across_seeds(rows, lambda r: (aggregate.setting(r), r["split"]),
                                "agreement_deep")
  deep_gap = aggregate.gaps(rows, metric="agreement_deep", reference_metric="agreement_shallow")
  out = ["## Faithfulness: agreement in distribution and out of it", "",
         "Agreement = fraction of scored positions where proxy and model predict the same "
         "closing bracket. Each OOD cell: agreement, then the generalization gap "
         "agreement(iid) − agreement(split) with its 95 % interval over seeds (positive: the "
         "proxy is less faithful there than in distribution). The pooled unseen_depth cell "
         "mostly counts shallow closes; the *deep closes* column is the depth-generalization "
         "gap: agreement on iid closes at key depth < m (the depths training scores) minus "
         "agreement on unseen_depth closes at key depth > m. Attention JSD on iid in the "
         "last column.", ""]
  for layer in layers:
    settings = sorted({aggregate.setting(r) for r in rows if r["layer"] == layer},
                      key=lambda s: (aggregate.families().index(s[0]), s[2] or 0))
    body = []
    for s in settings:
      cells = [aggregate.setting_label(s), _fmt(agreement[(s, "iid")])]
      cells += [f"{agreement[(s, split)][0]:.3f}; gap {_fmt(gap[(s, split)])}" for split in ood]
      if (s, "unseen_depth") in deep_gap:
        cells.append(f"{deep[(s, 'unseen_depth')][0]:.3f}; gap "
                     f"{_fmt(deep_gap[(s, 'unseen_depth')])}")
      else:
        cells.append("–")
      body.append(cells + [_fmt(jsd[(s, "iid")])])
    out += [f"### Layer {layer} head 0 simplified", ""]
    out += table(["proxy", "iid agreement"] + ood + ["deep closes (unseen_depth)",
                                                      "iid attention JSD"], body) + [""]
  return out


def estimation_section(rows: list[dict], pooled: list[dict], layers: Sequence[int],
                       train_depth: int) -> list[str]:
  """Under- or over-estimation of the model at unseen depth, per family's representative
  setting: accuracy(proxy) − accuracy(model) on the unseen_depth split, and on closes
  beyond the training depth (only unseen_depth has them): all of them, the first three
  depths past training, and the deeper rest."""
  m = train_depth
  ranges = {f"depth > {m}": (m + 1, 10**9), f"depth {m + 1}-{m + 3}": (m + 1, m + 3),
            f"depth ≥ {m + 4}": (m + 4, 10**9)}
  diff = aggregate.accuracy_differences(rows)
  out = ["## Which proxies under- or over-estimate the model at unseen depth", "",
         "accuracy(proxy) − accuracy(model), mean [95 % interval] over seeds: on the "
         f"unseen_depth split (pooled: mostly shallow closes), then on its closes deeper than "
         f"the training depth {m}, all together and split in two. Below 0 the proxy fails where the model "
         "generalizes (under-estimates it); above 0 it succeeds where the model fails "
         "(over-estimates it); the verdicts say where the interval excludes 0. The "
         "representative setting of a family is its smallest rank / K whose iid agreement "
         "reaches 0.9 (else its most faithful one).", ""]
  body = []
  for s in _representatives(rows, layers):
    if (s, "unseen_depth") not in diff:
      continue
    cells = [f"layer {s[1]}", aggregate.setting_label(s), _fmt(diff[(s, "unseen_depth")])]
    verdicts = []
    for name, (lo, hi) in ranges.items():
      interval = aggregate.pooled_interval(
          pooled, s, lambda r: lo <= int(r["bucket"]) <= hi,
          lambda r: r["accuracy_proxy"] - r["accuracy_model"], lambda r: r["n"])
      cells.append(_fmt(interval))
      verdicts.append(f"{name}: {aggregate.verdict(interval)}")
    body.append(cells + ["; ".join(verdicts[1:])])
  return out + table(["layer", "proxy", "unseen_depth", *ranges, "verdict"], body) + [""]


def depth_per_seed_section(pooled: list[dict], rows: list[dict], layers: Sequence[int],
                           train_depth: int) -> list[str]:
  """Accuracy on unseen_depth closes at key depth m+1..m+5, per seed: the model's, then
  each representative proxy's (how each trained model generalizes, and who follows it)."""
  lo, hi = train_depth + 1, train_depth + 5
  seeds = sorted({r["model_seed"] for r in pooled})
  out = [f"## Depth generalization per seed: key depth {lo}-{hi}", "",
         f"Accuracy on unseen_depth closes at key depth {lo}..{hi} (and how many there are), "
         "for each trained model, and each representative proxy's beside it.", ""]

  def per_seed(s, metric):
    sums = {seed: [0.0, 0.0] for seed in seeds}
    for r in pooled:
      if r["setting"] == s and lo <= int(r["bucket"]) <= hi:
        sums[r["model_seed"]][0] += r[metric] * r["n"]
        sums[r["model_seed"]][1] += r["n"]
    return sums

  chosen = _representatives(rows, layers)
  if not chosen:
    return []
  model = per_seed(chosen[0], "accuracy_model")
  body = [["model", ""] + [f"{a / n:.3f} (n {n:.0f})" if n else "–"
                           for a, n in model.values()]]
  for s in chosen:
    body.append([aggregate.setting_label(s), f"layer {s[1]}"]
                + [f"{a / n:.3f}" if n else "–" for a, n in per_seed(s, "accuracy_proxy").values()])
  return out + table(["", "layer"] + [f"seed {s}" for s in seeds], body) + [""]


def bootstrap_section(rows: list[dict], splits: Sequence[str], layers: Sequence[int]
                      ) -> list[str]:
  """Per seed, the bootstrap interval over strings of each representative setting."""
  out = ["## Intervals over strings (bootstrap, per seed)", "",
         "Agreement with its 95 % percentile bootstrap interval over the strings of each "
         "split (1,000 resamples), for each seed separately: how much of the spread comes "
         "from the finite test sets rather than from training.", ""]
  body = []
  for s in _representatives(rows, layers):
    for seed in sorted({r["model_seed"] for r in rows}):
      cells = [f"layer {s[1]}", aggregate.setting_label(s), str(seed)]
      for split in splits:
        match = [r for r in rows if aggregate.setting(r) == s and r["split"] == split
                 and r["model_seed"] == seed]
        r = match[0] if match else {}
        estimate = r.get("agreement")
        cells.append(_fmt((math.nan if estimate is None else estimate, r.get("agreement_lo"),
                           r.get("agreement_hi"))))
      body.append(cells)
  return out + table(["layer", "proxy", "seed"] + list(splits), body) + [""]


def error_section(group_rows: list[dict], rows: list[dict], layers: Sequence[int],
                  train_depth: int) -> list[str]:
  m = train_depth
  out = ["## Does the proxy explain the model's mistakes?", "",
         "Of the positions where the model errs, the fraction where the proxy errs too "
         f"(shared errors): in distribution (iid strings, key depth ≤ {m - 1}, the depths "
         f"training scores) and past the training depth (unseen_depth strings, key depth > "
         f"{m}); representative settings.", ""]
  where = {"iid": lambda r: int(r["bucket"]) < m, "unseen_depth": lambda r: int(r["bucket"]) > m}
  pooled = {split: aggregate.pooled_buckets(group_rows, "depth", splits=[split])
            for split in where}
  body = []
  for s in _representatives(rows, layers):
    cells = [f"layer {s[1]}", aggregate.setting_label(s)]
    for split, keep in where.items():
      cells.append(_fmt(aggregate.pooled_interval(
          pooled[split], s, keep, lambda r: r["shared_errors"],
          lambda r: (1 - r["accuracy_model"]) * r["n"])))
    body.append(cells)
  return out + table(["layer", "proxy", f"iid, depth ≤ {m - 1}",
                       f"unseen_depth, depth > {m}"], body) + [""]


def mechanism_section(mechanisms: list[dict], train_depth: int) -> list[str]:
  """What the last layer's queries and keys carry, and where k-means proxies' attention
  lands (experiments/mechanism.py), mean [95 % interval] over seeds."""
  if not mechanisms:
    return []
  m, first = train_depth, mechanisms[0]
  out = [f"## What the layer-{first['layer']} head's queries carry, and where k-means "
         "attention lands", "",
         "The head matches a close to the most recent unmatched open at the query's depth, "
         "so the match uses depth alone. Fraction of the variance of its queries and keys "
         f"(every position of {first['n_fit']} training strings) that the input token, the "
         "stack depth and the two together explain (between-group / total variance):", ""]
  labels = list(first["variance"]["q"])
  body = [[site] + [_fmt(aggregate.seed_interval([r["variance"][site][name]
                                                  for r in mechanisms])) for name in labels]
          for site in first["variance"]]
  out += table(["site", *labels], body) + [""]
  out += ["At scored closes, how often the strongest key of the model and of each k-means "
          "proxy (queries and keys clustered together, or each on its own) is the matching "
          f"open, and how often it is at the query's depth; iid closes at key depth "
          f"< {m} and unseen_depth closes at key depth > {m}:", ""]
  def name(r):
    if r["proxy"] == "model":
      return "model"
    return f"kmeans {'separate' if r['separate'] else 'joint'} K {r['k']}"
  cells: dict[str, dict[tuple, list[float]]] = {}
  for found in mechanisms:
    for r in found["landing"]:
      for metric in ("on_open", "at_depth"):
        cells.setdefault(name(r), {}).setdefault((r["split"], metric), []).append(r[metric])
  where = [(split, metric) for split in ("iid", "unseen_depth")
           for metric in ("on_open", "at_depth")]
  body = [[who] + [_fmt(aggregate.seed_interval(values.get(w, []))) for w in where]
          for who, values in cells.items()]
  header = [f"{split} {'on the open' if metric == 'on_open' else 'at its depth'}"
            for split, metric in where]
  return out + table(["", *header], body) + [""]


def _sorted_settings(rows: list[dict], layer: int) -> list[aggregate.Setting]:
  return sorted({aggregate.setting(r) for r in rows if r["layer"] == layer},
                key=lambda s: (aggregate.families().index(s[0]), s[2] or 0))


def depth_section(group_rows: list[dict], rows: list[dict], layers: Sequence[int],
                  train_depth: int) -> list[str]:
  """The deep-close gap split into its depth part and its length/span part
  (`depth_controls.decomposition`)."""
  m = train_depth
  found = depth_controls.decomposition(group_rows, m)
  if not found:
    return []
  out = ["## Is the gap past the training depth about depth?", "",
         f"Deep closes (key depth > {m}, unseen_depth) sit in long strings, far from their "
         "opens. *total*: agreement on iid closes at key depth 1.."
         f"{m - 1} minus agreement on deep closes (the deep-closes gap above). *depth*: "
         f"agreement on shallow closes (key depth 1..{m - 1}, of unseen_depth and its "
         "long_shallow control) in the same distance bucket and string-length bucket as "
         "the deep closes, reweighted to the deep closes' cells, minus agreement on those "
         "deep closes: the part depth explains with distance and length held fixed. "
         "*length/span*: total − depth, the part already there in shallow closes as long "
         "and as far from their opens. *share*: depth / total of the means. Mean [95 % "
         "interval] over seeds; *coverage*: fraction of deep closes in cells with a shallow "
         "reference. The first row of each table is the model's own accuracy, decomposed "
         "the same way.", ""]
  for layer in layers:
    body = []
    settings = [s for s in _sorted_settings(rows, layer) if s in found]
    if not settings:
      continue
    model = found[settings[0]]
    def cells(d, metric):
      total, depth = d[f"{metric} total"], d[f"{metric} matched"]
      share = depth[0] / total[0] if total[0] else float("nan")
      return [_fmt(total), _fmt(depth), _fmt(d[f"{metric} rest"]),
              # A share of a small gap, or of parts of opposite signs, is no fraction.
              "–" if math.isnan(share) or total[0] < 0.02 or depth[0] < 0 else f"{share:.2f}",
              f"{d['coverage'][0]:.2f}"]
    body.append(["model accuracy"] + cells(model, "accuracy_model"))
    body += [[aggregate.setting_label(s)] + cells(found[s], "agreement") for s in settings]
    out += [f"### Layer {layer} head 0 simplified", ""]
    out += table(["", "total gap", "depth", "length/span", "share", "coverage"], body)
    out += [""]
  return out


def margin_section(group_rows: list[dict], rows: list[dict], splits: Sequence[str],
                   layers: Sequence[int]) -> list[str]:
  """The gap to each OOD split, pooled and at equal model confidence."""
  ood = [s for s in splits if s != "iid"]
  found = depth_controls.margin_matched(group_rows, ood)
  if not found:
    return []
  out = ["## The gap at equal model confidence", "",
         "agreement(iid) − agreement(split): pooled, then within bins of the model's top-1 "
         "margin (probability of its first choice minus its second among the closing "
         "brackets; bins 0-0.1, 0.1-0.25, 0.25-0.5, 0.5-0.75, 0.75-0.9, 0.9-1) reweighted "
         "to the split's margins. Where the matched gap is much smaller than the pooled "
         "one, the proxy disagrees mostly where the model itself is unsure. Mean [95 % "
         "interval] over seeds.", ""]
  for layer in layers:
    body = []
    for s in _sorted_settings(rows, layer):
      cells = [aggregate.setting_label(s)]
      for split in ood:
        d = found.get((s, split))
        cells.append("–" if d is None else f"{_fmt(d['raw'])}; at equal margin "
                     f"{_fmt(d['matched'])}")
      body.append(cells)
    out += [f"### Layer {layer} head 0 simplified", ""] + table(["proxy", *ood], body) + [""]
  return out


def plain_deep_section(model_rows: list[dict], train_depth: int) -> list[str]:
  """The model's pooled accuracy on the plain deep sample, beside the paper's figure."""
  if not model_rows:
    return []
  splits = list(dict.fromkeys(r["split"] for r in model_rows))
  scorings = list(dict.fromkeys(r["scoring"] for r in model_rows))
  acc = aggregate.across_seeds(model_rows, lambda r: (r["split"], r["scoring"]), "accuracy")
  body = [[split] + [_fmt(acc[(split, sc)]) if (split, sc) in acc else "–" for sc in scorings]
          for split in splits]
  return ["## The model's pooled accuracy, like for like", "",
          f"unseen_depth_plain is the deep split as the paper describes it: strings of the "
          f"same sampler with a larger depth cap, kept when deeper than {train_depth}, not "
          "stratified (most of their deep closes lie at the first depths past the training "
          "depth, most of their closes are shallow). Its pooled accuracy is the number to "
          "set beside the paper's; unseen_depth is stratified by its deepest close. "
          "`murty`: closes at distance ≥ 10; `all_closes`: every close. Mean [95 % "
          "interval] over seeds.", ""] + table(["split", *scorings], body) + [""]


def fit_split_section(rows: list[dict], fit_rows: list[dict], splits: Sequence[str]
                      ) -> list[str]:
  """Proxies fitted on another split's strings against the same proxies fitted on training
  strings."""
  if not fit_rows:
    return []
  fit_split = fit_rows[0]["fit_split"]
  settings = sorted({aggregate.setting(r) for r in fit_rows},
                    key=lambda s: (s[1], aggregate.families().index(s[0]), s[2] or 0))
  ours = aggregate.across_seeds(rows, lambda r: (aggregate.setting(r), r["split"]), "agreement")
  theirs = aggregate.across_seeds(fit_rows, lambda r: (aggregate.setting(r), r["split"]),
                                  "agreement")
  deep = aggregate.across_seeds(rows, lambda r: (aggregate.setting(r), r["split"]),
                                "agreement_deep")
  deep_fit = aggregate.across_seeds(fit_rows, lambda r: (aggregate.setting(r), r["split"]),
                                    "agreement_deep")
  shown = [s for s in splits if any(r["split"] == s for r in fit_rows)]
  body = []
  for s in settings:
    cells = [f"layer {s[1]}", aggregate.setting_label(s)]
    for split in shown:
      a, b = ours.get((s, split)), theirs.get((s, split))
      cells.append("–" if a is None or b is None else f"{a[0]:.3f} → {_fmt(b)}")
    a, b = deep.get((s, "unseen_depth")), deep_fit.get((s, "unseen_depth"))
    cells.append("–" if a is None or b is None else f"{a[0]:.3f} → {_fmt(b)}")
    body.append(cells)
  return ["## Fitted on another distribution", "",
          f"The data-fitted proxies fitted on {fit_split} strings (deep strings of a "
          "validation split, disjoint from the test splits) instead of training strings: "
          "agreement when fitted on training strings → when fitted on "
          f"{fit_split} (mean [95 % interval] over seeds). If the depth gap came from "
          "fitting on shallow data alone, fitting on deep strings would close it.", ""
          ] + table(["layer", "proxy", *shown, "deep closes (unseen_depth)"], body) + [""]


def diagnostics_section(rows: list[dict], splits: Sequence[str]) -> list[str]:
  """Reconstruction diagnostics of the kinds that have them (fvu, mean L0, dead latents on
  each split's vectors) beside the agreement gap."""
  with_fvu = [r for r in rows if r.get("fvu") is not None]
  if not with_fvu:
    return []
  fvu = aggregate.across_seeds(with_fvu, lambda r: (aggregate.setting(r), r["split"]), "fvu")
  dead = aggregate.across_seeds(with_fvu, lambda r: (aggregate.setting(r), r["split"]), "dead")
  l0 = aggregate.across_seeds(with_fvu, lambda r: (aggregate.setting(r), r["split"]), "l0")
  gap = aggregate.gaps(with_fvu)
  ood = [s for s in splits if s != "iid"]
  body = []
  settings = sorted({aggregate.setting(r) for r in with_fvu},
                    key=lambda s: (s[1], aggregate.families().index(s[0]), s[2] or 0))
  for s in settings:
    cells = [f"layer {s[1]}", aggregate.setting_label(s), _fmt(fvu[(s, "iid")]),
             f"{l0[(s, 'iid')][0]:.1f}", f"{dead[(s, 'iid')][0]:.2f}"]
    cells += [f"{fvu[(s, split)][0]:.3f}; gap {gap[(s, split)][0]:.3f}"
              if (s, split) in fvu and (s, split) in gap else "–" for split in ood]
    body.append(cells)
  return ["## Reconstruction out of distribution", "",
          "For the kinds that reconstruct vectors (sae): the fraction of variance "
          "unexplained (fvu) of the head's queries and keys on iid strings with its 95 % "
          "interval over seeds, the mean number of active latents (L0) and the fraction of "
          "latents that never fire there; then per OOD split its fvu and the agreement gap "
          "agreement(iid) − agreement(split), means over seeds.", ""
          ] + table(["layer", "proxy", "iid fvu", "L0", "dead", *ood], body) + [""]


def write(path: str, *, title: str, setup: Sequence[str], rows: list[dict],
          group_rows: list[dict], splits: Sequence[str], layers: Sequence[int],
          train_depth: int, figures: Sequence[str], mechanisms: Sequence[dict] = (),
          model_rows: Sequence[dict] = (), fit_rows: Sequence[dict] = (),
          extra: Sequence[str] = ()) -> None:
  pooled = aggregate.pooled_buckets(group_rows, "depth", splits=["unseen_depth"])
  lines = [f"# {title}", ""] + list(setup) + [""]
  lines += model_section(rows, splits)
  lines += plain_deep_section(list(model_rows), train_depth)
  lines += faithfulness_section(rows, splits, layers)
  lines += depth_section(group_rows, rows, layers, train_depth)
  lines += margin_section(group_rows, rows, splits, layers)
  lines += fit_split_section(rows, list(fit_rows), splits)
  lines += diagnostics_section(rows, splits)
  lines += list(extra)
  lines += estimation_section(rows, pooled, layers, train_depth)
  lines += depth_per_seed_section(pooled, rows, layers, train_depth)
  lines += error_section(group_rows, rows, layers, train_depth)
  lines += mechanism_section(list(mechanisms), train_depth)
  lines += bootstrap_section(rows, splits, layers)
  lines += ["## Figures", ""]
  lines += [f"![{os.path.basename(f)}]({os.path.relpath(f, os.path.dirname(path))})"
            for f in figures]
  atomic.write_text(path, "\n".join(lines) + "\n")
