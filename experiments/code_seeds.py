"""The code-completion tables over seeds, written as JSON, a page and two figures.

  python -m experiments.code_seeds --runs=runs/code-python-s0,runs/code-python-s1,...

Writes <out>.json: `per_seed` (each seed's values: induction scores per checkpoint, loss
curve, evaluations, buckets) and the tables derived from it (`code_seed_tables`, which says
what is read from each run and how the contrasts are paired), each interval a Student-t
95 % interval over seeds with the per-seed values it came from; <out>.md, the tables;
<out>_gaps.png (gap per word bucket) and <out>_training.png (loss and induction score
against the step).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence

import numpy as np

from data import code_batch
from experiments import aggregate, cli, figures
from experiments.code_seed_tables import FORMED, INDUCTION, OTHERS, ROLES, load_run, summarize
from models import atomic
from pipeline import rundir

SHOWN_BY_WORD = (("svd", 4), ("sae", 4), ("kmeans", 16))  # the by-word table's rows
MIN_N = 500  # a category x word cell is ranked only with this many positions per split


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
