"""The code-completion tables over seeds: each run's evaluations and gaps -> means with
Student-t 95 % intervals over seeds, beside the intervals over files of each run.

  python -m experiments.code_seeds --runs=runs/code-python-s0,runs/code-python-s1,runs/code-python-s2

Reads, per run: eval/induction.json (experiments.induction), every single-head proxy
evaluation of the layer (evaluate.py's eval/*.json rows) and eval/gaps_<proxy><value>_layer<l>.json
(experiments.code_gaps). Heads are not the same across seeds, so they are compared by role:
each run's *induction head* (the highest induction score in the layer) and the mean over
its *other heads*. Writes <out>.md, <out>.json and <out>_gaps.png (gap per word bucket).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from data import code_batch
from experiments import aggregate, cli, figures
from pipeline import rundir
from models import atomic

INDUCTION, OTHERS = "induction head", "other heads"
WORD_OUTSIDE = code_batch.WORD[0]
MIN_N = 500  # a category x word cell is ranked only with this many positions per split


def _read(path: str):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise cli.UsageError(f"cannot read {path!r} ({e})") from None


def load_run(run_dir: str, layer: int, gaps: str) -> dict:
  """{'seed', 'induction': {head: score}, 'rows': single-head evaluation rows of `layer`,
  'gaps': code_gaps rows}. Newer evaluation files win where two hold the same setting."""
  config = rundir.read_config(run_dir)
  if config.get("task") != "code":
    raise cli.UsageError(f"run {run_dir!r} is not a code run")
  scores = {r["head"]: r["induction_score"]
            for r in _read(os.path.join(run_dir, "eval", "induction.json")) if r["layer"] == layer}
  rows: dict[tuple, dict] = {}
  paths = sorted(glob.glob(os.path.join(run_dir, "eval", "*.json")), key=os.path.getmtime)
  for path in paths:
    name = os.path.basename(path)
    if name.endswith("_by_group.json") or name.startswith("gaps_") or name == "induction.json":
      continue
    for r in _read(path):
      if isinstance(r, dict) and r.get("layer") == layer and isinstance(r.get("head"), int) \
          and "agreement" in r:
        rows[(r["proxy"], r.get("rank", r.get("k")), r["head"], r["split"])] = r
  return {"seed": config["train"]["seed"], "induction": scores, "rows": list(rows.values()),
          "gaps": _read(os.path.join(run_dir, "eval", f"{gaps}.json"))}


def induction_head(run: dict) -> int:
  return max(run["induction"], key=run["induction"].get)


def _interval(values: Sequence[float]) -> dict:
  mean, lo, hi = aggregate.seed_interval(list(values))
  return {"mean": mean, "lo": lo, "hi": hi, "seeds": len(values)}


def by_role(runs: list[dict], rows_of, value_of) -> dict[str, list[float]]:
  """role -> per-seed values: the induction head's, and the mean over the other heads'.
  rows_of(run): the rows of one setting (one per head); value_of(row, run): a number or
  None."""
  out = defaultdict(list)
  for run in runs:
    ind = induction_head(run)
    per_head = {}
    for r in rows_of(run):
      v = value_of(r, run)
      if v is not None:
        per_head[r["head"]] = v
    if ind in per_head:
      out[INDUCTION].append(per_head[ind])
    others = [v for h, v in per_head.items() if h != ind]
    if others:
      out[OTHERS].append(float(np.mean(others)))
  return dict(out)


def summarize(runs: list[dict]) -> dict:
  """Every table of the report, as plain data."""
  splits = list(dict.fromkeys(r["split"] for run in runs for r in run["rows"]))
  induction = {
      "heads": [{"seed": run["seed"], "head": induction_head(run),
                 "score": run["induction"][induction_head(run)],
                 "next_best": max([s for h, s in run["induction"].items()
                                   if h != induction_head(run)], default=math.nan)}
                for run in runs]}
  induction["score"] = _interval([h["score"] for h in induction["heads"]])
  induction["next_best"] = _interval([h["next_best"] for h in induction["heads"]])

  model = []
  for split in splits:
    first = [next(r for r in run["rows"] if r["split"] == split) for run in runs]
    model.append({"split": split,
                  "accuracy_model": _interval([r["accuracy_model"] for r in first]),
                  "bits_model": _interval([r["bits_model"] for r in first]),
                  "accuracy_model_file_ci": [
                      [r.get("accuracy_model_lo"), r.get("accuracy_model_hi")] for r in first]})

  settings = sorted({(r["proxy"], r.get("rank", r.get("k"))) for run in runs for r in run["rows"]},
                    key=lambda s: (s[0], s[1] or 0))
  proxies = []
  for proxy, value in settings:
    same = lambda r, split: (r["proxy"], r.get("rank", r.get("k"))) == (proxy, value) \
        and r["split"] == split
    for split in splits:
      entry = {"proxy": proxy, "value": value, "split": split}
      for role, values in by_role(runs, lambda run: [r for r in run["rows"] if same(r, split)],
                                  lambda r, run: r["agreement"]).items():
        entry[role] = _interval(values)
      widths = by_role(runs, lambda run: [r for r in run["rows"] if same(r, split)],
                       lambda r, run: None if r.get("agreement_lo") is None
                       else (r["agreement_hi"] - r["agreement_lo"]) / 2)
      entry["file_half_width"] = {role: float(np.mean(v)) for role, v in widths.items()}
      if split != splits[0]:
        def gap(r, run, split=split):
          ref = next((x for x in run["rows"] if same(x, splits[0]) and x["head"] == r["head"]),
                     None)
          return None if ref is None else ref["agreement"] - r["agreement"]
        for role, values in by_role(runs, lambda run: [r for r in run["rows"] if same(r, split)],
                                    gap).items():
          entry[f"gap {role}"] = _interval(values)
      proxies.append(entry)

  gaps = []
  keys = list(dict.fromkeys((g["group"], g["bucket"], g["split"]) for run in runs
                            for g in run["gaps"] if g["split"] != "iid"))
  for group, bucket, split in keys:
    rows_of = lambda run: [g for g in run["gaps"] if (g["group"], g["bucket"], g["split"])
                           == (group, bucket, split)]
    iid_of = lambda run: [g for g in run["gaps"] if (g["group"], g["bucket"], g["split"])
                          == (group, bucket, "iid")]
    entry = {"group": group, "bucket": bucket, "split": split}
    for role, values in by_role(runs, rows_of, lambda g, run: g.get("gap")).items():
      entry[role] = _interval(values)
    for role, values in by_role(runs, iid_of, lambda g, run: g.get("agreement")).items():
      entry[f"iid agreement {role}"] = _interval(values)
    excluded = by_role(runs, rows_of, lambda g, run: None if g.get("gap_lo") is None
                       else float(g["gap_lo"] > 0) - float(g["gap_hi"] < 0))
    entry["file_ci_excludes_0"] = [int(v) for v in excluded.get(INDUCTION, [])]
    entry["n"] = float(np.mean([min([g["n"] for g in rows_of(run) + iid_of(run)
                                      if g["head"] == induction_head(run)] or [0])
                                for run in runs]))
    gaps.append(entry)
  return {"seeds": [run["seed"] for run in runs], "splits": splits, "induction": induction,
          "model": model, "proxies": proxies, "gaps": gaps,
          "versus_outside": versus_outside(runs, splits[1:]),
          "versus_others": versus_others(runs, splits[1:]), "per_seed_iid": per_seed_iid(runs)}


def versus_others(runs: list[dict], splits: Sequence[str]) -> list[dict]:
  """Per split: the induction head's overall gap minus the mean gap of the other heads,
  paired within each seed (code_gaps setting)."""
  out = []
  for split in splits:
    diffs = []
    for run in runs:
      gap = {g["head"]: g["gap"] for g in run["gaps"]
             if g["group"] == "all" and g["split"] == split and g.get("gap") is not None}
      ind = induction_head(run)
      others = [v for h, v in gap.items() if h != ind]
      if ind in gap and others:
        diffs.append(gap[ind] - float(np.mean(others)))
    out.append({"split": split, **_interval(diffs)})
  return out


def per_seed_iid(runs: list[dict]) -> list[dict]:
  """Per seed and word bucket: the induction head's iid agreement with its interval over
  files (code_gaps setting)."""
  return [{"seed": run["seed"], "head": induction_head(run), "bucket": g["bucket"],
           "agreement": g["agreement"], "lo": g["agreement_lo"], "hi": g["agreement_hi"]}
          for run in runs for g in run["gaps"]
          if g["group"] == "word" and g["split"] == "iid" and g["head"] == induction_head(run)]


def versus_outside(runs: list[dict], splits: Sequence[str]) -> list[dict]:
  """Per split and word bucket: the induction head's gap there minus its gap outside words,
  paired within each seed (the claim 'the gap is largest at repeated words' is this
  difference being above 0)."""
  out = []
  for split in splits:
    for bucket in code_batch.WORD[1:]:
      diffs = []
      for run in runs:
        ind = induction_head(run)
        gap = {g["bucket"]: g.get("gap") for g in run["gaps"]
               if g["group"] == "word" and g["split"] == split and g["head"] == ind}
        if gap.get(bucket) is not None and gap.get(WORD_OUTSIDE) is not None:
          diffs.append(gap[bucket] - gap[WORD_OUTSIDE])
      out.append({"split": split, "bucket": bucket, **_interval(diffs)})
  return out


def _fmt(i: dict | None, signed: bool = False) -> str:
  if not i or i["mean"] is None or math.isnan(i["mean"]):
    return "–"
  s = "+" if signed else ""
  return f"{i['mean']:{s}.3f} [{i['lo']:{s}.3f}, {i['hi']:{s}.3f}]"


def _signs(votes: list[int]) -> str:
  """How many seeds' file intervals lie above 0 / below 0, e.g. '3/3 >0'."""
  up, down = sum(v > 0 for v in votes), sum(v < 0 for v in votes)
  parts = ([f"{up}/{len(votes)} >0"] if up else []) + ([f"{down}/{len(votes)} <0"] if down else [])
  return " ".join(parts) or f"0/{len(votes)}"


def _width(x: float | None) -> str:
  return "–" if x is None or math.isnan(x) else f"{x:.3f}"


def markdown(summary: dict, title: str) -> str:
  s, ood = summary, summary["splits"][1:]
  ind = s["induction"]
  lines = [f"# {title}", "",
           f"Seeds {', '.join(map(str, s['seeds']))}; mean [Student-t 95 % interval over "
           "seeds]. Per seed, heads are compared by role: the induction head (highest score in "
           "the layer) and the mean over the other heads.", "",
           "## Induction heads", "",
           "| seed | induction head | score | next best head |", "|---|---|---|---|"]
  lines += [f"| {h['seed']} | {h['head']} | {h['score']:.3f} | {h['next_best']:.3f} |"
            for h in ind["heads"]]
  lines += [f"| mean | | {_fmt(ind['score'])} | {_fmt(ind['next_best'])} |", "",
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
    label = f"{p['proxy']} {'rank' if p['proxy'] != 'kmeans' else 'K'} {p['value']}"
    hw = p["file_half_width"]
    lines.append(f"| {label} | {p['split']} | {_fmt(p.get(INDUCTION))} | "
                 f"{_width(hw.get(INDUCTION))} | {_fmt(p.get(f'gap {INDUCTION}'), True)} | "
                 f"{_fmt(p.get(OTHERS))} | {_width(hw.get(OTHERS))} | "
                 f"{_fmt(p.get(f'gap {OTHERS}'), True)} |")
  for group, heading in (("all", "All positions"), ("word", "Gap by word bucket"),
                         ("category_word", "Gap by category x word bucket")):
    rows = [g for g in s["gaps"] if g["group"] == group]
    lines += ["", f"## {heading} (code_gaps setting)", "",
              "seeds >0 / <0: seeds whose induction-head gap has an interval over files above / "
              "below 0. min n: the fewer positions of iid and the split (induction head, mean "
              "over seeds).", "",
              f"| bucket | split | iid agreement ({INDUCTION}) | gap {INDUCTION} | seeds | "
              f"gap {OTHERS} | min n |", "|---|---|---|---|---|---|---|"]
    for g in rows:
      ex = g["file_ci_excludes_0"]
      lines.append(f"| {g['bucket']} | {g['split']} | {_fmt(g.get(f'iid agreement {INDUCTION}'))} "
                   f"| {_fmt(g.get(INDUCTION), True)} | {_signs(ex)} | "
                   f"{_fmt(g.get(OTHERS), True)} | {g['n']:.0f} |")
  lines += ["", "## Induction head: gap in a word bucket minus the gap outside words "
            "(paired per seed)", "", "| split | " + " | ".join(code_batch.WORD[1:]) + " |",
            "|---|" + "---|" * (len(code_batch.WORD) - 1)]
  for split in ood:
    cells = {v["bucket"]: v for v in s["versus_outside"] if v["split"] == split}
    lines.append(f"| {split} | " + " | ".join(_fmt(cells.get(w), True)
                                               for w in code_batch.WORD[1:]) + " |")
  lines += ["", "## Induction head's gap minus the other heads' mean gap (paired per seed)", "",
            "| split | difference |", "|---|---|"]
  lines += [f"| {v['split']} | {_fmt(v, True)} |" for v in s["versus_others"]]
  lines += ["", "## Induction head's iid agreement per seed [95 % interval over files]", "",
            "| seed (head) | " + " | ".join(code_batch.WORD) + " |",
            "|---|" + "---|" * len(code_batch.WORD)]
  for seed in s["seeds"]:
    mine = {v["bucket"]: v for v in s["per_seed_iid"] if v["seed"] == seed}
    head = next(iter(mine.values()))["head"] if mine else "–"
    lines.append(f"| {seed} ({head}) | " + " | ".join(
        f"{mine[w]['agreement']:.3f} [{mine[w]['lo']:.3f}, {mine[w]['hi']:.3f}]"
        if w in mine else "–" for w in code_batch.WORD) + " |")
  lines += ["", f"## Largest gaps of the induction head's proxy (cells with n ≥ {MIN_N})", ""]
  for split in ood:
    cells = sorted((g for g in s["gaps"] if g["group"] == "category_word" and g["split"] == split
                    and g["n"] >= MIN_N and INDUCTION in g), key=lambda g: -g[INDUCTION]["mean"])
    lines.append(f"- {split}: " + "; ".join(
        f"{g['bucket']} {_fmt(g[INDUCTION], True)}" for g in cells[:6]))
  return "\n".join(lines) + "\n"


def figure(summary: dict, path: str) -> str:
  plt = figures.plt
  ood = summary["splits"][1:]
  fig, axes = plt.subplots(1, len(ood), figsize=(6 * len(ood), 4.2), sharey=True, squeeze=False)
  for ax, split in zip(axes[0], ood):
    rows = {g["bucket"]: g for g in summary["gaps"] if g["group"] == "word" and g["split"] == split}
    labels = [w for w in code_batch.WORD if w in rows]
    x = np.arange(len(labels))
    for i, role in enumerate((INDUCTION, OTHERS)):
      stats = [rows[w].get(role) for w in labels]
      mean = np.array([st["mean"] if st else np.nan for st in stats])
      err = np.array([[st["mean"] - st["lo"], st["hi"] - st["mean"]] if st else [0, 0]
                      for st in stats]).T
      ax.bar(x + (i - 0.5) * 0.38, mean, 0.38, yerr=err, capsize=3, label=role)
    ax.set_xticks(x, [w.replace(" word", "") for w in labels], rotation=30, ha="right")
    ax.axhline(0, color="black", linewidth=0.5)
    figures.label_axes(ax, "word bucket of the predicted character",
                       "agreement(iid) − agreement(split)", split)
    ax.legend(fontsize=8)
  fig.suptitle(f"gap per word bucket, mean of {len(summary['seeds'])} seeds, t 95 % interval")
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
  runs = [load_run(d, args.layer, args.gaps) for d in args.runs.split(",")]
  if len({r["seed"] for r in runs}) < len(runs):
    raise cli.UsageError("two runs have the same seed")
  summary = summarize(runs)
  cli.ensure_writable(os.path.dirname(os.path.abspath(args.out)))
  rundir.write_json(f"{args.out}.json", summary)
  md = markdown(summary, f"Code completion over seeds ({args.gaps})")
  atomic.write_text(f"{args.out}.md", md)
  png = figure(summary, f"{args.out}_gaps.png")
  print(md)
  print(f"wrote {args.out}.md, {args.out}.json and {png}")


if __name__ == "__main__":
  cli.run_main(main)
