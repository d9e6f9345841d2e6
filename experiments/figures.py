"""The reproduction's figures (PNG), drawn from aggregated rows; mean over seeds with the
seeds' 95 % interval as a band.

  sweep_layer<L>.png               agreement and attention JSD against rank / K, one curve
                                   per split (the paper's Figure 4)
  accuracy_by_depth_layer<L>.png   accuracy by depth of the model and of each proxy family
                                   (its representative setting): where a proxy under- or
                                   over-estimates the model
  divergence_by_depth_layer<L>.png svd proxy's disagreement and TV against key depth, one
                                   curve per rank (the paper's Figure 6)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; no display on a server or in CI
import matplotlib.pyplot as plt  # noqa: E402

import proxies  # noqa: E402
from experiments import aggregate  # noqa: E402


def sweep_axis(family: str) -> str:
  """A family's sweep axis label: its kind's `sweep_label` (default: the sweep's name), one
  fit per site for a '<kind> separate' family."""
  label = proxies.KINDS[family.split()[0]].sweep_label or aggregate.sweep_name(family)
  return f"{label}, one fit per site" if family.endswith(" separate") else label


def _band(ax, x, intervals, label, **style):
  """A mean curve and its interval; every metric drawn here lies in [0, 1], and so does its
  band (a t-interval over 3 seeds can reach past the metric's range)."""
  means = [i[0] for i in intervals]
  line, = ax.plot(x, means, marker="o", markersize=3, label=label, **style)
  ax.fill_between(x, np.clip([i[1] for i in intervals], 0, 1),
                  np.clip([i[2] for i in intervals], 0, 1),
                  color=line.get_color(), alpha=0.15, linewidth=0)


def label_axes(ax, xlabel: str, ylabel: str, title: str, train_depth: int | None = None) -> None:
  if train_depth is not None:  # a depth-m open always closes at once: never scored in training
    ax.axvline(train_depth - 0.5, color="grey", linestyle=":",
               label=f"deepest close scored in training ({train_depth - 1})")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)


def save_figure(fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _by_depth(pooled: list[dict], s: aggregate.Setting, metric: str) -> tuple[list, list]:
  """Depths and intervals over seeds of `metric` for setting `s`."""
  stats = aggregate.across_seeds([r for r in pooled if r["setting"] == s],
                                 lambda r: int(r["bucket"]), metric)
  xs = sorted(stats)
  return xs, [stats[x] for x in xs]


def sweep(rows: list[dict], layer: int, splits: Sequence[str], path: str) -> str | None:
  families = [p for p in aggregate.families() if aggregate.sweep_name(p)
              and any(aggregate.family(r) == p and r["layer"] == layer for r in rows)]
  if not families:
    return None
  fig, axes = plt.subplots(len(families), 2, figsize=(10, 3.2 * len(families)), squeeze=False)
  for row_axes, proxy in zip(axes, families):
    mine = [r for r in rows if aggregate.family(r) == proxy and r["layer"] == layer]
    for ax, metric in zip(row_axes, ("agreement", "attention_jsd")):
      stats = aggregate.across_seeds(mine, lambda r: (r["split"], aggregate.setting(r)[2]), metric)
      for split in splits:
        values = sorted(v for s, v in stats if s == split)
        _band(ax, values, [stats[(split, v)] for v in values], split)
      ax.set_xscale("log", base=2)
      label_axes(ax, sweep_axis(proxy),
                 metric.replace("_", " "), f"{proxy}, layer {layer}")
  axes[0][0].legend(fontsize=8)
  return save_figure(fig, path)


def accuracy_by_depth(pooled: list[dict], settings: Sequence[aggregate.Setting],
                      train_depth: int, path: str) -> str:
  fig, ax = plt.subplots(figsize=(7, 4.2))
  _band(ax, *_by_depth(pooled, settings[0], "accuracy_model"), "model", color="black",
        linewidth=2)
  for s in settings:
    _band(ax, *_by_depth(pooled, s, "accuracy_proxy"), aggregate.setting_label(s),
          linestyle="--")
  label_axes(ax, "depth of the bracket to close", "accuracy (scored closes)",
         f"accuracy by depth, layer {settings[0][1]} simplified (unseen_depth strings)",
         train_depth)
  ax.legend(fontsize=8)
  return save_figure(fig, path)


def divergence_by_depth(pooled: list[dict], settings: Sequence[aggregate.Setting],
                        train_depth: int, path: str) -> str:
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  pooled = [dict(r, disagreement=1 - r["agreement"]) for r in pooled]
  for ax, metric, name in ((axes[0], "disagreement", "disagreement with the model"),
                           (axes[1], "tv", "total variation of next-token distributions")):
    for s in settings:
      _band(ax, *_by_depth(pooled, s, metric), aggregate.setting_label(s))
    label_axes(ax, "key depth (depth of the matching open bracket)", name,
           f"layer {settings[0][1]}", train_depth)
  axes[0].legend(fontsize=8)
  return save_figure(fig, path)


def all_figures(rows: list[dict], group_rows: list[dict], layers: Sequence[int],
                splits: Sequence[str], train_depth: int, out_dir: str) -> list[str]:
  os.makedirs(out_dir, exist_ok=True)
  written = []
  # Depth curves from one split: pooling every split would mix its strings' structures
  # into each depth (and only unseen_depth has closes past the training depth).
  pooled = aggregate.pooled_buckets(group_rows, "depth", splits=["unseen_depth"])
  for layer in layers:
    path = sweep(rows, layer, splits, os.path.join(out_dir, f"sweep_layer{layer}.png"))
    written += [path] if path else []
    chosen = [s for p in aggregate.families()
              if (s := aggregate.representative(rows, p, layer)) is not None]
    if chosen:
      written.append(accuracy_by_depth(pooled, chosen, train_depth,
                                       os.path.join(out_dir, f"accuracy_by_depth_layer{layer}.png")))
    svd = sorted({r["setting"] for r in pooled if r["setting"][:2] == ("svd", layer)},
                 key=lambda s: s[2])
    if svd:
      written.append(divergence_by_depth(pooled, svd, train_depth,
                                         os.path.join(out_dir, f"divergence_by_depth_layer{layer}.png")))
  return written
