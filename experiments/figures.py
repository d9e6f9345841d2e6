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

from experiments import aggregate  # noqa: E402

SWEEP_AXIS = {"svd": "rank (components)", "kmeans": "K (clusters)", "weight_svd": "rank of W_QK"}


def _band(ax, x, intervals, label, **style):
  """A mean curve and its interval; every metric drawn here lies in [0, 1], and so does its
  band (a t-interval over 3 seeds can reach past the metric's range)."""
  means = [i[0] for i in intervals]
  line, = ax.plot(x, means, marker="o", markersize=3, label=label, **style)
  ax.fill_between(x, np.clip([i[1] for i in intervals], 0, 1),
                  np.clip([i[2] for i in intervals], 0, 1),
                  color=line.get_color(), alpha=0.15, linewidth=0)


def sweep(rows: list[dict], layer: int, splits: Sequence[str], path: str) -> str | None:
  families = [p for p in SWEEP_AXIS if any(r["proxy"] == p and r["layer"] == layer for r in rows)]
  if not families:
    return None
  fig, axes = plt.subplots(len(families), 2, figsize=(10, 3.2 * len(families)), squeeze=False)
  for row_axes, proxy in zip(axes, families):
    mine = [r for r in rows if r["proxy"] == proxy and r["layer"] == layer]
    for ax, metric in zip(row_axes, ("agreement", "attention_jsd")):
      stats = aggregate.across_seeds(mine, lambda r: (r["split"], aggregate.setting(r)[2]), metric)
      for split in splits:
        values = sorted(v for s, v in stats if s == split)
        _band(ax, values, [stats[(split, v)] for v in values], split)
      ax.set_xscale("log", base=2)
      ax.set_xlabel(SWEEP_AXIS[proxy])
      ax.set_ylabel(metric.replace("_", " "))
      ax.set_title(f"{proxy}, layer {layer}")
      ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def accuracy_by_depth(pooled: list[dict], settings: Sequence[aggregate.Setting],
                      train_depth: int, path: str) -> str:
  fig, ax = plt.subplots(figsize=(7, 4.2))
  depth = lambda r: int(r["bucket"])
  model = aggregate.across_seeds([r for r in pooled if r["setting"] == settings[0]], depth,
                                 "accuracy_model")
  xs = sorted(model)
  _band(ax, xs, [model[x] for x in xs], "model", color="black", linewidth=2)
  for s in settings:
    stats = aggregate.across_seeds([r for r in pooled if r["setting"] == s], depth,
                                   "accuracy_proxy")
    xs = sorted(stats)
    _band(ax, xs, [stats[x] for x in xs], aggregate.setting_label(s), linestyle="--")
  ax.axvline(train_depth + 0.5, color="grey", linestyle=":", label=f"training depth {train_depth}")
  ax.set_xlabel("depth of the bracket to close")
  ax.set_ylabel("accuracy (scored closes)")
  ax.set_title(f"accuracy by depth, layer {settings[0][1]} simplified (all splits pooled)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def divergence_by_depth(pooled: list[dict], settings: Sequence[aggregate.Setting],
                        train_depth: int, path: str) -> str:
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  depth = lambda r: int(r["bucket"])
  for ax, metric, name in ((axes[0], "agreement", "disagreement with the model"),
                           (axes[1], "tv", "total variation of next-token distributions")):
    for s in settings:
      mine = [dict(r, disagreement=1 - r["agreement"]) for r in pooled if r["setting"] == s]
      stats = aggregate.across_seeds(mine, depth,
                                     "disagreement" if metric == "agreement" else metric)
      xs = sorted(stats)
      _band(ax, xs, [stats[x] for x in xs], aggregate.setting_label(s))
    ax.axvline(train_depth + 0.5, color="grey", linestyle=":")
    ax.set_xlabel("key depth (depth of the matching open bracket)")
    ax.set_ylabel(name)
    ax.set_title(f"layer {settings[0][1]}")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def all_figures(rows: list[dict], group_rows: list[dict], layers: Sequence[int],
                splits: Sequence[str], train_depth: int, out_dir: str) -> list[str]:
  os.makedirs(out_dir, exist_ok=True)
  written = []
  pooled = aggregate.pooled_buckets(group_rows, "depth")
  for layer in layers:
    path = sweep(rows, layer, splits, os.path.join(out_dir, f"sweep_layer{layer}.png"))
    written += [path] if path else []
    chosen = [s for p in ("svd", "kmeans", "onehot", "weight_svd")
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
