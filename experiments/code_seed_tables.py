"""The code-completion tables over seeds, computed from each seed's run directory: every
interval a Student-t interval over seeds, every contrast paired within seeds, every
per-seed value kept, so that anyone can recompute them from the JSON alone
(`experiments.code_seeds` is the command that writes them and their page).

Reads, per run: metrics.jsonl (the training loss), eval/induction.json and
eval/induction_steps.json (experiments.induction, the latter with --steps=all), every
single-head proxy evaluation of the layer (evaluate.py's eval/*.json rows) and
eval/<gaps>.json (experiments.code_gaps: buckets with intervals over files, and the
model's margin bins). Heads are not the same across seeds, so they are compared by role:
each run's *induction head* (the highest induction score in the layer) and the mean over
its *other heads*.

Contrasts are differences taken within each seed, then averaged: a word bucket's gap minus
another's (repeated rare minus first rare isolates copying: both are rare words, only one
can be copied), a word bucket's gap minus the gap of the same character categories outside
words (reweighted to the bucket's mix of categories, so formatting characters do not drive
the baseline), and the induction head minus the other heads of its layer.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from data import code_batch
from experiments import aggregate, cli
from pipeline import confidence, rundir

INDUCTION, OTHERS = "induction head", "other heads"
ROLES = (INDUCTION, OTHERS)
WORD_OUTSIDE = code_batch.WORD[0]
FORMED = 0.5  # an induction head has formed once its score crosses this
EVALUATION_KEYS = ("proxy", "head", "split", "agreement", "agreement_lo", "agreement_hi",
                   "accuracy_model", "accuracy_proxy", "bits_model", "accuracy_model_lo",
                   "accuracy_model_hi", "fvu", "l0", "dead")
WORD_KEYS = ("proxy", "split", "bucket", "n", "agreement", "accuracy_model", "accuracy_proxy")
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
