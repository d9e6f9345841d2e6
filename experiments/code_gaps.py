"""Where a code proxy's gaps are: agreement per character category and word bucket, in
distribution and on each other language, as a figure and a markdown table.

  python -m experiments.code_gaps --run=runs/code-python-s0 \\
      --eval=svd_layer1_head3_q+k_1-2-4-8-16-32 --value=4

reads <run>/eval/<eval>_by_group.json (written by evaluate.py) and writes
<run>/eval/<eval>_gaps.png and _gaps.md: for one setting (rank or K `--value`), the gap
agreement(iid) − agreement(split) in every bucket of `category_word`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

import numpy as np

from experiments import cli, figures
from models import atomic


def gap_table(groups: list[dict], value: int | None) -> tuple[list[str], dict[str, dict]]:
  """(bucket labels, split -> bucket -> (agreement, n)) for the chosen setting."""
  mine = [g for g in groups if g["group"] == "category_word"
          and g.get("rank", g.get("k")) == value]
  labels = list(dict.fromkeys(g["bucket"] for g in mine))
  table: dict[str, dict] = {}
  for g in mine:
    table.setdefault(g["split"], {})[g["bucket"]] = (g["agreement"], g["n"])
  return labels, table


def write(groups: list[dict], value: int | None, stem: str, out_dir: str) -> tuple[str, str]:
  labels, table = gap_table(groups, value)
  if "iid" not in table:
    raise cli.UsageError(f"{stem}: no iid rows for value {value} in the category_word group")
  ood = [s for s in table if s != "iid"]
  gap = lambda split, b: (table["iid"].get(b, (None,))[0], table[split].get(b, (None,))[0])
  plt = figures.plt
  fig, ax = plt.subplots(figsize=(12, 4.5))
  width = 0.8 / max(len(ood), 1)
  x = np.arange(len(labels))
  for i, split in enumerate(ood):
    heights = [(a - b) if a is not None and b is not None else np.nan
               for a, b in (gap(split, label) for label in labels)]
    ax.bar(x + i * width, heights, width, label=split)
  ax.set_xticks(x + width * (len(ood) - 1) / 2, labels, rotation=60, ha="right", fontsize=8)
  ax.axhline(0, color="black", linewidth=0.5)
  figures.label_axes(ax, "next character: category / word bucket",
                 "agreement(iid) − agreement(split)", f"{stem}, value {value}")
  ax.legend(fontsize=8)
  png = figures.save_figure(fig, os.path.join(out_dir, f"{stem}_gaps.png"))

  lines = [f"# Gaps of {stem} (value {value}) by category and word bucket", "",
           "| bucket | iid agreement (n) | " + " | ".join(f"{s} gap (n)" for s in ood) + " |",
           "|---|---|" + "---|" * len(ood)]
  for label in labels:
    a, n = table["iid"].get(label, (None, 0))
    cells = [f"{a:.3f} ({n})" if a is not None else "–"]
    for split in ood:
      b, m = table[split].get(label, (None, 0))
      cells.append(f"{a - b:+.3f} ({m})" if a is not None and b is not None else "–")
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  md = os.path.join(out_dir, f"{stem}_gaps.md")
  atomic.write_text(md, "\n".join(lines) + "\n")
  return png, md


def main(argv: Sequence[str]) -> None:
  parser = cli.Parser(prog="python -m experiments.code_gaps", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", required=True, help="a code run directory")
  parser.add_argument("--eval", required=True, help="the evaluation's file stem under <run>/eval")
  parser.add_argument("--value", type=int, default=None,
                      help="the rank or K to show (default: none, for onehot)")
  args = parser.parse_args(argv)
  out_dir = os.path.join(args.run, "eval")
  path = os.path.join(out_dir, f"{args.eval}_by_group.json")
  try:
    with open(path, encoding="utf-8") as f:
      groups = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise cli.UsageError(f"cannot read {path!r} ({e}); run evaluate.py on a code run first") from None
  png, md = write(groups, args.value, args.eval, out_dir)
  print(f"wrote {png} and {md}")


if __name__ == "__main__":
  cli.run_main(main)
