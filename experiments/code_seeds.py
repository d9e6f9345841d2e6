"""The code-completion tables over seeds, every interval paired within seeds and every
per-seed value kept, so that anyone can recompute them from the JSON alone.

  python -m experiments.code_seeds --runs=runs/code-python-s0,runs/code-python-s1,...

Reads, per run: metrics.jsonl (the training loss), eval/induction.json and
eval/induction_steps.json (experiments.induction, the latter with --steps=all), every
single-head proxy evaluation of the layer (evaluate.py's eval/*.json rows) and
eval/<gaps>.json (experiments.code_gaps: buckets with intervals over files, and the
model's margin bins). Heads are not the same across seeds, so they are compared by role:
each run's *induction head* (the highest induction score in the layer) and the mean over
its *other heads*.

Writes <out>.json: `per_seed` (each seed's values: induction scores per checkpoint, loss
curve, evaluations, buckets) and the tables derived from it by `summarize`, each interval a
Student-t 95 % interval over seeds with the per-seed values it came from; <out>.md, the
tables; <out>_gaps.png (gap per word bucket) and <out>_training.png (loss and induction
score against the step).

Contrasts are differences taken within each seed, then averaged: a word bucket's gap minus
another's (repeated rare minus first rare isolates copying: both are rare words, only one
can be copied), a word bucket's gap minus the gap of the same character categories outside
words (reweighted to the bucket's mix of categories, so formatting characters do not drive
the baseline), and the induction head minus the other heads of its layer.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from data import code_batch
from experiments import aggregate, cli, figures
from pipeline import confidence, rundir
from models import atomic

INDUCTION, OTHERS = "induction head", "other heads"
ROLES = (INDUCTION, OTHERS)
WORD_OUTSIDE = code_batch.WORD[0]
FORMED = 0.5  # an induction head has formed once its score crosses this
MIN_N = 500  # a category x word cell is ranked only with this many positions per split
EVALUATION_KEYS = ("proxy", "head", "split", "agreement", "agreement_lo", "agreement_hi",
                   "accuracy_model", "accuracy_proxy", "bits_model", "accuracy_model_lo",
                   "accuracy_model_hi", "fvu", "l0", "dead")
WORD_KEYS = ("proxy", "split", "bucket", "n", "agreement", "accuracy_model", "accuracy_proxy")
SHOWN_BY_WORD = (("svd", 4), ("sae", 4), ("kmeans", 16))  # the by-word table's rows in the .md
BUCKET_KEYS = ("head", "group", "bucket", "split", "n", "n_files", "agreement",
               "agreement_lo", "agreement_hi", "accuracy_model", "accuracy_proxy", "gap",
               "gap_lo", "gap_hi")


def _read(path: str):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise cli.UsageError(f"cannot read {path!r} ({e})") from None


def _round(v):
  return round(v, 6) if isinstance(v, float) else v


def loss_curve(run_dir: str) -> list[list[float]]:
  """[[step, loss], ...] from the run's metrics.jsonl (lines cut short are skipped)."""
  out = []
  try:
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
      for line in f:
        try:
          m = json.loads(line)
        except json.JSONDecodeError:
          continue
        if "loss" in m:
          out.append([m["step"], _round(float(m["loss"]))])
  except OSError:
    pass
  return out


def load_run(run_dir: str, layer: int, gaps: str) -> dict:
  """One seed's record, as `per_seed` stores it. Newer evaluation files win where two
  hold the same setting."""
  config = rundir.read_config(run_dir)
  if config.get("task") != "code":
    raise cli.UsageError(f"run {run_dir!r} is not a code run")
  eval_dir = os.path.join(run_dir, "eval")
  scores = {r["head"]: r["induction_score"]
            for r in _read(os.path.join(eval_dir, "induction.json")) if r["layer"] == layer}
  steps_path = os.path.join(eval_dir, "induction_steps.json")
  by_step: dict[int, dict] = {}
  for r in (_read(steps_path) if os.path.exists(steps_path) else []):
    if r["layer"] == layer and r["induction_score"] > by_step.get(r["step"], {}).get("score", -1):
      by_step[r["step"]] = {"step": r["step"], "head": r["head"],
                            "score": _round(r["induction_score"])}
  evaluations: dict[tuple, dict] = {}
  for path in sorted(glob.glob(os.path.join(eval_dir, "*.json")), key=os.path.getmtime):
    name = os.path.basename(path)
    if name.endswith("_by_group.json") or name.startswith(("gaps_", "induction")):
      continue
    for r in _read(path):
      if isinstance(r, dict) and r.get("layer") == layer and isinstance(r.get("head"), int) \
          and "agreement" in r:
        row = {k: _round(r[k]) for k in EVALUATION_KEYS if k in r}
        row["value"] = r.get("rank", r.get("k"))
        evaluations[(row["proxy"], row["value"], row["head"], row["split"])] = row
  buckets = [{k: _round(g[k]) for k in BUCKET_KEYS if k in g}
             for g in _read(os.path.join(eval_dir, f"{gaps}.json")) if g.get("layer") == layer]
  head = max(scores, key=scores.get)
  words: dict[tuple, dict] = {}  # every proxy of the induction head, per word bucket
  for path in sorted(glob.glob(os.path.join(eval_dir, "*_by_group.json")), key=os.path.getmtime):
    for r in _read(path):
      if r.get("layer") == layer and r.get("head") == head and r.get("group") == "word":
        row = {k: _round(r[k]) for k in WORD_KEYS if k in r}
        row["value"] = r.get("rank", r.get("k"))
        words[(row["proxy"], row["value"], row["split"], row["bucket"])] = row
  steps = [by_step[s] for s in sorted(by_step)]
  return {"seed": config["train"]["seed"], "run": run_dir, "layer": layer, "gaps": gaps,
          "induction_head": head, "induction": {str(h): _round(s) for h, s in scores.items()},
          "induction_steps": steps,
          "formed_at": next((s["step"] for s in steps if s["score"] >= FORMED), None),
          "loss": loss_curve(run_dir), "evaluations": list(evaluations.values()),
          "buckets": buckets, "induction_head_words": list(words.values())}


@dataclasses.dataclass
class Seed:
  """One seed's record with its buckets indexed."""

  record: dict

  def __post_init__(self):
    self.head = self.record["induction_head"]
    self.buckets = {(r["head"], r["group"], r["bucket"], r["split"]): r
                    for r in self.record["buckets"]}
    self.evaluations = {(r["proxy"], r["value"], r["head"], r["split"]): r
                        for r in self.record["evaluations"]}
    self.words = {(r["proxy"], r["value"], r["split"], r["bucket"]): r
                  for r in self.record.get("induction_head_words", [])}
    self.heads = sorted({r["head"] for r in self.record["buckets"]}
                        | {r["head"] for r in self.record["evaluations"]})

  def get(self, head: int, group: str, bucket: str, split: str, key: str) -> float | None:
    return self.buckets.get((head, group, bucket, split), {}).get(key)

  def evaluation(self, proxy: str, value, head: int, split: str) -> dict | None:
    return self.evaluations.get((proxy, value, head, split))

  def word(self, proxy: str, value, split: str, bucket: str, key: str) -> float | None:
    return self.words.get((proxy, value, split, bucket), {}).get(key)


def _interval(values: Sequence[float | None]) -> dict:
  kept = [v for v in values if v is not None and not math.isnan(v)]
  mean, lo, hi = aggregate.seed_interval(kept)
  return {"mean": mean, "lo": lo, "hi": hi, "seeds": len(kept),
          "values": [_round(float(v)) for v in kept]}


def by_role(seeds: Sequence[Seed], value_of: Callable[[Seed, int], float | None]
            ) -> dict[str, dict]:
  """role -> interval over seeds of value_of(seed, head): the induction head's, and the mean
  over the other heads that have a value."""
  out = {role: [] for role in ROLES}
  for s in seeds:
    out[INDUCTION].append(value_of(s, s.head))
    others = [v for h in s.heads if h != s.head
              for v in [value_of(s, h)] if v is not None]
    out[OTHERS].append(float(np.mean(others)) if others else None)
  return {role: _interval(v) for role, v in out.items()}


def _difference(a: float | None, b: float | None) -> float | None:
  return None if a is None or b is None else a - b


def outside_baseline(s: Seed, head: int, bucket: str, split: str) -> float | None:
  """The gap outside words at the character categories of `bucket`, weighted by the
  bucket's positions per category on `split` (categories without positions outside words
  drop out, and the weights are renormalized)."""
  weights, gaps = [], []
  for c in code_batch.CATEGORIES:
    n = s.get(head, "category_word", f"{c} / {bucket}", split, "n")
    gap = s.get(head, "category_word", f"{c} / {WORD_OUTSIDE}", split, "gap")
    if n and gap is not None:
      weights.append(n)
      gaps.append(gap)
  return float(np.average(gaps, weights=weights)) if weights else None


def contrast_values(split: str) -> dict[str, Callable[[Seed, int], float | None]]:
  """name -> value_of(seed, head) of each within-seed contrast of the gap on `split`."""
  gap = lambda bucket: lambda s, h: s.get(h, "word", bucket, split, "gap")
  out = {"gap, all positions": lambda s, h: s.get(h, "all", "all", split, "gap"),
         "repeated rare − first rare": lambda s, h: _difference(
             gap("repeated rare word")(s, h), gap("first rare word")(s, h)),
         "repeated frequent − first frequent": lambda s, h: _difference(
             gap("repeated frequent word")(s, h), gap("first frequent word")(s, h))}
  for bucket in code_batch.WORD[1:]:
    out[f"{bucket} − same categories outside words"] = (
        lambda s, h, b=bucket: _difference(gap(b)(s, h), outside_baseline(s, h, b, split)))
  return out


def head_contrast(seeds: Sequence[Seed], value_of) -> dict:
  """The induction head's value minus the mean of the other heads', paired per seed."""
  diffs = []
  for s in seeds:
    others = [v for h in s.heads if h != s.head for v in [value_of(s, h)] if v is not None]
    diffs.append(_difference(value_of(s, s.head), float(np.mean(others)) if others else None))
  return _interval(diffs)


def margin_gap(s: Seed, head: int, split: str) -> dict[str, float | None]:
  """{'raw', 'matched'}: agreement(iid) - agreement(split), pooled, and within the model's
  margin bins reweighted to the split's (bins with no iid position drop out)."""
  bins = lambda sp: {b: (s.get(head, confidence.GROUP, b, sp, "n"),
                         s.get(head, confidence.GROUP, b, sp, "agreement"))
                     for b in confidence.LABELS if s.get(head, confidence.GROUP, b, sp, "n")}
  return dict(zip(("raw", "matched"), aggregate.matched_difference(bins("iid"), bins(split))))


def summarize(records: Sequence[dict]) -> dict:
  """Every table of the report from the per-seed records alone."""
  seeds = [Seed(r) for r in records]
  splits = list(dict.fromkeys(r["split"] for s in seeds for r in s.record["evaluations"]))
  ood = splits[1:]
  induction = {"heads": [], "formed": FORMED}
  for s in seeds:
    scores = {int(h): v for h, v in s.record["induction"].items()}
    induction["heads"].append({
        "seed": s.record["seed"], "head": s.head, "score": scores[s.head],
        "next_best": max([v for h, v in scores.items() if h != s.head], default=math.nan),
        "formed_at": s.record["formed_at"],
        "final_loss": s.record["loss"][-1][1] if s.record["loss"] else None})
  induction["score"] = _interval([h["score"] for h in induction["heads"]])
  induction["next_best"] = _interval([h["next_best"] for h in induction["heads"]])

  model = []
  for split in splits:
    first = [next(r for r in s.record["evaluations"] if r["split"] == split) for s in seeds]
    model.append({"split": split,
                  "accuracy_model": _interval([r["accuracy_model"] for r in first]),
                  "bits_model": _interval([r["bits_model"] for r in first]),
                  "accuracy_model_file_ci": [[r.get("accuracy_model_lo"),
                                              r.get("accuracy_model_hi")] for r in first]})

  settings = sorted({(r["proxy"], r["value"]) for s in seeds for r in s.record["evaluations"]},
                    key=lambda p: (p[0], p[1] or 0))
  proxies = []
  for proxy, value in settings:
    for split in splits:
      row = lambda s, h, sp=split: s.evaluation(proxy, value, h, sp)
      entry = {"proxy": proxy, "value": value, "split": split,
               **by_role(seeds, lambda s, h: (row(s, h) or {}).get("agreement"))}
      widths = by_role(seeds, lambda s, h: None if (row(s, h) or {}).get("agreement_lo") is None
                       else (row(s, h)["agreement_hi"] - row(s, h)["agreement_lo"]) / 2)
      entry["file_half_width"] = {role: w["mean"] for role, w in widths.items()}
      if split != splits[0]:
        gaps = by_role(seeds, lambda s, h: _difference(
            (s.evaluation(proxy, value, h, splits[0]) or {}).get("agreement"),
            (row(s, h) or {}).get("agreement")))
        entry.update({f"gap {role}": v for role, v in gaps.items()})
      proxies.append(entry)

  equal = sae_versus_svd(seeds, splits)
  gaps = []
  for group in ("all", "word", "category_word"):
    labels = dict.fromkeys(r["bucket"] for s in seeds for r in s.record["buckets"]
                           if r["group"] == group)
    for bucket in labels:
      for split in ood:
        entry = {"group": group, "bucket": bucket, "split": split,
                 **by_role(seeds, lambda s, h: s.get(h, group, bucket, split, "gap"))}
        entry.update({f"iid agreement {role}": v for role, v in by_role(
            seeds, lambda s, h: s.get(h, group, bucket, "iid", "agreement")).items()})
        entry["file_ci_excludes_0"] = [
            0 if s.get(s.head, group, bucket, split, "gap_lo") is None else
            int(s.get(s.head, group, bucket, split, "gap_lo") > 0)
            - int(s.get(s.head, group, bucket, split, "gap_hi") < 0) for s in seeds]
        entry["n"] = float(np.mean([min(s.get(s.head, group, bucket, sp, "n") or 0
                                        for sp in ("iid", split)) for s in seeds]))
        gaps.append(entry)

  contrasts = []
  for split in ood:
    for name, value_of in contrast_values(split).items():
      contrasts.append({"split": split, "contrast": name, **by_role(seeds, value_of),
                        "induction − others": head_contrast(seeds, value_of)})

  def excess(s: Seed, h: int, group: str, bucket: str, split: str) -> float | None:
    return _difference(s.get(h, group, bucket, split, "accuracy_proxy"),
                       s.get(h, group, bucket, split, "accuracy_model"))

  direction = []
  for split in splits:
    for group, bucket in [("all", "all")] + [("word", w) for w in code_batch.WORD]:
      entry = {"split": split, "bucket": bucket, **by_role(
          seeds, lambda s, h, g=group, b=bucket, sp=split: excess(s, h, g, b, sp))}
      if split != splits[0]:  # out of distribution minus in distribution, paired per seed
        entry["change from iid"] = by_role(
            seeds, lambda s, h, g=group, b=bucket, sp=split: _difference(
                excess(s, h, g, b, sp), excess(s, h, g, b, splits[0])))
      direction.append(entry)

  margin = []
  for split in ood:
    for kind in ("raw", "matched"):
      value_of = lambda s, h, sp=split, k=kind: margin_gap(s, h, sp)[k]
      margin.append({"split": split, "gap": kind, **by_role(seeds, value_of),
                     "induction − others": head_contrast(seeds, value_of)})

  return {"seeds": [s.record["seed"] for s in seeds], "splits": splits, "induction": induction,
          "model": model, "proxies": proxies, "gaps": gaps, "contrasts": contrasts,
          "direction": direction, "margin": margin, "sae_versus_svd": equal,
          "by_word": by_word(seeds, splits), "per_seed": list(records)}


def by_word(seeds: Sequence[Seed], splits: Sequence[str]) -> list[dict]:
  """Every proxy setting of the induction head per word bucket: its gap (agreement on iid
  minus on the split) and its direction (accuracy(proxy) − accuracy(model)), over seeds,
  so that families can be compared where the gap falls, not only pooled."""
  settings = sorted({(p, v) for s in seeds for (p, v, _, _) in s.words},
                    key=lambda pv: (pv[0], pv[1] or 0))
  out = []
  for proxy, value in settings:
    for bucket in code_batch.WORD:
      get = lambda s, split, key: s.word(proxy, value, split, bucket, key)
      entry = {"proxy": proxy, "value": value, "bucket": bucket}
      for split in splits:
        entry[f"direction {split}"] = _interval(
            [_difference(get(s, split, "accuracy_proxy"), get(s, split, "accuracy_model"))
             for s in seeds])
        if split != splits[0]:
          entry[f"gap {split}"] = _interval(
              [_difference(get(s, splits[0], "agreement"), get(s, split, "agreement"))
               for s in seeds])
      out.append(entry)
  return out


def sae_versus_svd(seeds: Sequence[Seed], splits: Sequence[str]) -> list[dict]:
  """The induction head's sae with k active latents against its svd of rank k (the same
  number of active dimensions), paired per seed, with the sae's FVU on each split."""
  values = lambda proxy: {r["value"] for s in seeds for r in s.record["evaluations"]
                          if r["proxy"] == proxy}
  out = []
  for value in sorted(values("sae") & values("svd")):
    get = lambda s, proxy, split, key: (s.evaluation(proxy, value, s.head, split) or {}).get(key)
    gap = lambda s, proxy, split: _difference(get(s, proxy, splits[0], "agreement"),
                                              get(s, proxy, split, "agreement"))
    for split in splits:
      entry = {"value": value, "split": split,
               **{f"{p} agreement": _interval([get(s, p, split, "agreement") for s in seeds])
                  for p in ("sae", "svd")},
               "sae fvu": _interval([get(s, "sae", split, "fvu") for s in seeds])}
      if split != splits[0]:
        entry["sae − svd gap"] = _interval([_difference(gap(s, "sae", split), gap(s, "svd", split))
                                            for s in seeds])
      out.append(entry)
  return out


def _fmt(i: dict | None, signed: bool = False) -> str:
  if not i or i["mean"] is None or math.isnan(i["mean"]):
    return "–"
  s = "+" if signed else ""
  return f"{i['mean']:{s}.3f} [{i['lo']:{s}.3f}, {i['hi']:{s}.3f}]"


def _signs(votes: list[int]) -> str:
  """How many seeds' file intervals lie above 0 / below 0, e.g. '3/5 >0'."""
  up, down = sum(v > 0 for v in votes), sum(v < 0 for v in votes)
  parts = ([f"{up}/{len(votes)} >0"] if up else []) + ([f"{down}/{len(votes)} <0"] if down else [])
  return " ".join(parts) or f"0/{len(votes)}"


def _width(x: float | None) -> str:
  return "–" if x is None or math.isnan(x) else f"{x:.3f}"


def markdown(summary: dict, title: str, command: str) -> str:
  s, ood = summary, summary["splits"][1:]
  ind = s["induction"]
  lines = [f"# {title}", "", f"Written by `{command}`; every number below is in the JSON "
           "beside this page, with the per-seed values it came from.", "",
           f"Seeds {', '.join(map(str, s['seeds']))}; mean [Student-t 95 % interval over "
           "seeds]. Heads are compared by role: each seed's induction head (highest score in "
           "the layer) and the mean over the other heads of the layer.", "",
           "## Training and induction heads", "",
           f"Score: attention on the copy target over repeated random tokens (1: a perfect "
           f"induction head). Formed: the first checkpoint where the best head of the layer "
           f"scores ≥ {FORMED}.", "",
           "| seed | induction head | score | next best head | best score per checkpoint | "
           "formed at | final loss |", "|---|---|---|---|---|---|---|"]
  for h, rec in zip(ind["heads"], s["per_seed"]):
    curve = ", ".join(f"{p['step']}: {p['score']:.2f}" for p in rec["induction_steps"])
    loss = "–" if h["final_loss"] is None else f"{h['final_loss']:.3f}"
    lines.append(f"| {h['seed']} | {h['head']} | {h['score']:.3f} | {h['next_best']:.3f} | "
                 f"{curve or '–'} | {h['formed_at'] or 'never'} | {loss} |")
  lines += [f"| mean | | {_fmt(ind['score'])} | {_fmt(ind['next_best'])} | | | |", "",
            "## Model", "", "| split | accuracy | file 95 % per seed | bits/char |",
            "|---|---|---|---|"]
  for m in s["model"]:
    files = "; ".join(f"[{lo:.3f}, {hi:.3f}]" for lo, hi in m["accuracy_model_file_ci"]
                      if lo is not None)
    lines.append(f"| {m['split']} | {_fmt(m['accuracy_model'])} | {files} | "
                 f"{_fmt(m['bits_model'])} |")
  lines += ["", "## Proxies: agreement with the model, and gap agreement(iid) − agreement(split)",
            "", "± files: mean half-width of the per-seed 95 % bootstrap interval over files.", "",
            f"| proxy | split | {INDUCTION} | ± files | gap | {OTHERS} | ± files | gap |",
            "|---|---|---|---|---|---|---|---|"]
  for p in s["proxies"]:
    label = f"{p['proxy']} {aggregate.sweep_name(p['proxy']) or ''} {p['value']}"
    hw = p["file_half_width"]
    lines.append(f"| {label} | {p['split']} | {_fmt(p.get(INDUCTION))} | "
                 f"{_width(hw.get(INDUCTION))} | {_fmt(p.get(f'gap {INDUCTION}'), True)} | "
                 f"{_fmt(p.get(OTHERS))} | {_width(hw.get(OTHERS))} | "
                 f"{_fmt(p.get(f'gap {OTHERS}'), True)} |")
  gaps_of = next(iter(s["per_seed"]), {}).get("gaps", "")
  lines += ["", f"## Paired contrasts of the gap ({gaps_of})", "",
            "Each a difference taken within a seed, then averaged over seeds; above 0: the "
            "first term's gap is larger.", "",
            f"| split | contrast | {INDUCTION} | {OTHERS} | {INDUCTION} − {OTHERS} |",
            "|---|---|---|---|---|"]
  lines += [f"| {c['split']} | {c['contrast']} | {_fmt(c[INDUCTION], True)} | "
            f"{_fmt(c[OTHERS], True)} | {_fmt(c['induction − others'], True)} |"
            for c in s["contrasts"]]
  lines += ["", "## Direction: accuracy(proxy) − accuracy(model) per word bucket", "",
            "Below 0: the proxy under-estimates the model there; above 0: it over-estimates it. "
            "Change from iid: the split's value minus iid's, paired per seed (induction head).",
            "", f"| split | bucket | {INDUCTION} | {OTHERS} | change from iid |",
            "|---|---|---|---|---|"]
  lines += [f"| {d['split']} | {d['bucket']} | {_fmt(d[INDUCTION], True)} | "
            f"{_fmt(d[OTHERS], True)} | "
            f"{_fmt(d['change from iid'][INDUCTION], True) if 'change from iid' in d else '–'} |"
            for d in s["direction"]]
  if s["sae_versus_svd"]:
    lines += ["", "## The induction head's sae (k active latents) against its svd of rank k",
              "", "FVU: the sae's fraction of variance unexplained on the split's vectors. "
              "sae − svd gap: the difference of their gaps, paired per seed.", "",
              "| k | split | sae agreement | svd agreement | sae FVU | sae − svd gap |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {e['value']} | {e['split']} | {_fmt(e['sae agreement'])} | "
              f"{_fmt(e['svd agreement'])} | {_fmt(e['sae fvu'])} | "
              f"{_fmt(e.get('sae − svd gap'), True)} |" for e in s["sae_versus_svd"]]
  shown = [e for e in s.get("by_word", []) if (e["proxy"], e["value"]) in SHOWN_BY_WORD]
  if shown:
    ood = s["splits"][1:]
    lines += ["", "## The induction head's proxies by word bucket", "",
              "Gap: agreement(iid) − agreement(split); direction: accuracy(proxy) − "
              "accuracy(model). Every setting is in the JSON (`by_word`).", "",
              "| proxy | bucket | " + " | ".join(f"gap {sp}" for sp in ood) + " | "
              + " | ".join(f"direction {sp}" for sp in s["splits"]) + " |",
              "|---|---|" + "---|" * (len(ood) + len(s["splits"]))]
    lines += [f"| {e['proxy']} {aggregate.sweep_name(e['proxy']) or ''} {e['value']} | "
              f"{e['bucket']} | "
              + " | ".join(_fmt(e[f"gap {sp}"], True) for sp in ood) + " | "
              + " | ".join(_fmt(e[f"direction {sp}"], True) for sp in s["splits"]) + " |"
              for e in shown]
  lines += ["", "## Gap at equal confidence", "",
            "raw: agreement(iid) − agreement(split); matched: the same within bins of the "
            "model's top-1 margin, reweighted to the split's margins.", "",
            f"| split | gap | {INDUCTION} | {OTHERS} | induction head − other heads |",
            "|---|---|---|---|---|"]
  lines += [f"| {m['split']} | {m['gap']} | {_fmt(m[INDUCTION], True)} | "
            f"{_fmt(m[OTHERS], True)} | {_fmt(m['induction − others'], True)} |"
            for m in s["margin"]]
  lines += ["", "## Gap by word bucket", "",
            "seeds >0 / <0: seeds whose induction-head gap has an interval over files above / "
            "below 0. min n: the fewer positions of iid and the split (induction head, mean "
            "over seeds).", "",
            f"| bucket | split | iid agreement ({INDUCTION}) | gap {INDUCTION} | seeds | "
            f"gap {OTHERS} | min n |", "|---|---|---|---|---|---|---|"]
  for g in s["gaps"]:
    if g["group"] in ("all", "word"):
      lines.append(f"| {g['bucket']} | {g['split']} | "
                   f"{_fmt(g.get(f'iid agreement {INDUCTION}'))} | {_fmt(g[INDUCTION], True)} | "
                   f"{_signs(g['file_ci_excludes_0'])} | {_fmt(g[OTHERS], True)} | "
                   f"{g['n']:.0f} |")
  lines += ["", f"## Largest gaps of the induction head's proxy (category x word cells with "
            f"n ≥ {MIN_N})", ""]
  for split in ood:
    cells = sorted((g for g in s["gaps"] if g["group"] == "category_word" and g["split"] == split
                    and g["n"] >= MIN_N and not math.isnan(g[INDUCTION]["mean"])),
                   key=lambda g: -g[INDUCTION]["mean"])
    lines.append(f"- {split}: " + "; ".join(
        f"{g['bucket']} {_fmt(g[INDUCTION], True)}" for g in cells[:6]))
  return "\n".join(lines) + "\n"


def figure(summary: dict, path: str) -> str:
  """The gap per word bucket of each out-of-distribution split, by role."""
  plt = figures.plt
  ood = summary["splits"][1:]
  fig, axes = plt.subplots(1, len(ood), figsize=(6 * len(ood), 4.2), sharey=True, squeeze=False)
  for ax, split in zip(axes[0], ood):
    rows = {g["bucket"]: g for g in summary["gaps"] if g["group"] == "word" and g["split"] == split}
    labels = [w for w in code_batch.WORD if w in rows]
    x = np.arange(len(labels))
    for i, role in enumerate(ROLES):
      stats = [rows[w][role] for w in labels]
      mean = np.array([st["mean"] for st in stats])
      err = np.array([[st["mean"] - st["lo"], st["hi"] - st["mean"]] for st in stats]).T
      ax.bar(x + (i - 0.5) * 0.38, mean, 0.38, yerr=err, capsize=3, label=role)
    ax.set_xticks(x, [w.replace(" word", "") for w in labels], rotation=30, ha="right")
    ax.axhline(0, color="black", linewidth=0.5)
    figures.label_axes(ax, "word bucket of the predicted character",
                       "agreement(iid) − agreement(split)", split)
    ax.legend(fontsize=8)
  fig.suptitle(f"gap per word bucket, mean of {len(summary['seeds'])} seeds, t 95 % interval")
  return figures.save_figure(fig, path)


def training_figure(summary: dict, path: str) -> str:
  """Per seed: the training loss and the layer's best induction score against the step."""
  plt = figures.plt
  fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(11, 4))
  for rec in summary["per_seed"]:
    if rec["loss"]:
      steps, losses = zip(*rec["loss"])
      loss_ax.plot(steps, losses, label=f"seed {rec['seed']}")
    if rec["induction_steps"]:
      score_ax.plot([p["step"] for p in rec["induction_steps"]],
                    [p["score"] for p in rec["induction_steps"]], marker="o",
                    label=f"seed {rec['seed']}")
  score_ax.axhline(FORMED, color="black", linestyle=":", linewidth=1, label="formed")
  figures.label_axes(loss_ax, "step", "training loss (nats/char)", "training loss")
  figures.label_axes(score_ax, "step", "best induction score in the layer", "induction heads")
  loss_ax.legend(fontsize=8)
  score_ax.legend(fontsize=8)
  return figures.save_figure(fig, path)


def main(argv: Sequence[str]) -> None:
  parser = cli.Parser(prog="python -m experiments.code_seeds", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--runs", required=True, help="comma-separated code run directories")
  parser.add_argument("--layer", type=int, default=1, help="the layer whose heads were evaluated")
  parser.add_argument("--gaps", default="gaps_svd4_layer1",
                      help="code_gaps file stem under each run's eval/ (default: gaps_svd4_layer1)")
  parser.add_argument("--out", default="docs/code/seeds", help="output path without extension")
  args = parser.parse_args(argv)
  records = [load_run(d, args.layer, args.gaps) for d in args.runs.split(",")]
  if len({r["seed"] for r in records}) < len(records):
    raise cli.UsageError("two runs have the same seed")
  summary = summarize(records)
  cli.ensure_writable(os.path.dirname(os.path.abspath(args.out)))
  rundir.write_json(f"{args.out}.json", summary)
  command = "python -m experiments.code_seeds " + " ".join(argv)
  md = markdown(summary, f"Code completion over {len(records)} seeds ({args.gaps})", command)
  atomic.write_text(f"{args.out}.md", md)
  png = figure(summary, f"{args.out}_gaps.png")
  training = training_figure(summary, f"{args.out}_training.png")
  print(md)
  print(f"wrote {args.out}.md, {args.out}.json, {png} and {training}")


if __name__ == "__main__":
  cli.run_main(main)
