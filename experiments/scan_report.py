"""What a scan writes (`pipeline.scan.Scan`): report.md, report.json and its figures.

  figures/heatmap.png                     heads x families, coloured by the largest area gap
                                          between in distribution and another split; flagged
                                          cells marked
  figures/curves_layer<L>_head<H>.png     per family, agreement against proxy size on every
                                          split, its chance control dashed and the control
                                          fitted on another split dotted
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from experiments import figures, report
from experiments.figures import plt
from models import atomic
from pipeline import rundir, scan as scan_lib


def _num(x, digits: int = 3) -> str:
  return "-" if x is None else f"{x:.{digits}f}"


def _with_interval(x, lo, hi) -> str:
  return f"{_num(x)} [{_num(lo)}, {_num(hi)}]"


def heatmap(scan: scan_lib.Scan, path: str) -> str | None:
  headline = scan.headline()
  if not headline:
    return None
  families = list(dict.fromkeys(h["family"] for h in headline))
  heads = sorted({(h["layer"], h["head"]) for h in headline})
  gap = np.full((len(heads), len(families)), np.nan)
  for h in headline:
    gap[heads.index((h["layer"], h["head"])), families.index(h["family"])] = h["gap"]
  fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(families), 1.2 + 0.5 * len(heads)))
  limit = max(0.05, float(np.nanmax(np.abs(gap))))
  image = ax.imshow(gap, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
  for h in headline:
    i, j = heads.index((h["layer"], h["head"])), families.index(h["family"])
    text = f"{h['gap']:.2f}" + ("\n!" * bool(h["flags"]))
    ax.text(j, i, text, ha="center", va="center", fontsize=8,
            fontweight="bold" if h["flags"] else "normal")
  ax.set_xticks(range(len(families)), families, rotation=30, ha="right")
  ax.set_yticks(range(len(heads)), [f"layer {l} head {h}" for l, h in heads])
  ax.set_title("area gap: in distribution - worst split (! flagged)", fontsize=9)
  fig.colorbar(image, ax=ax, shrink=0.8)
  return figures.save_figure(fig, path)


def curves(scan: scan_lib.Scan, layer: int, head: int, path: str) -> str | None:
  mine = [u for u in scan.units if (u["layer"], u["head"]) == (layer, head)]
  families = list(dict.fromkeys(u["family"] for u in mine if u["role"] == "proxy"))
  if not families:
    return None
  fig, axes = plt.subplots(1, len(families), figsize=(3.6 * len(families), 3.2), squeeze=False)
  for ax, family in zip(axes[0], families):
    proxy = next(u for u in mine if u["role"] == "proxy" and u["family"] == family)
    colours = {}
    for split in proxy["splits"]:
      x, y = scan.curve(proxy, split)
      line, = ax.plot(x, y, marker="o", markersize=3, label=split)
      colours[split] = line.get_color()
    for role, style in (("chance", "--"), ("fit_split", ":")):
      controls = [u for u in mine if u["role"] == role and u["family"] == family]
      for split in proxy["splits"] if controls else ():
        x = scan.curve(controls[0], split)[0]
        y = np.mean([scan.curve(c, split)[1] for c in controls], axis=0)
        ax.plot(x, y, linestyle=style, color=colours[split], linewidth=1)
    if proxy["values"]:
      ax.set_xscale("log", base=2)
    figures.label_axes(ax, figures.sweep_axis(family) if proxy["values"] else "(no sweep)",
                       "agreement", f"{family}, layer {layer} head {head}")
    ax.set_ylim(0, 1.02)
  axes[0][0].legend(fontsize=7, title="-- chance   : fitted elsewhere", title_fontsize=7)
  return figures.save_figure(fig, path)


def write(scan: scan_lib.Scan, out_dir: str, *, title: str, setup: Sequence[str]) -> list[str]:
  """report.md, report.json and the figures under `out_dir`; returns the paths."""
  os.makedirs(os.path.join(out_dir, "figures"), exist_ok=True)
  drawn = [heatmap(scan, os.path.join(out_dir, "figures", "heatmap.png"))]
  for layer, head in sorted({(u["layer"], u["head"]) for u in scan.units}):
    drawn.append(curves(scan, layer, head, os.path.join(
        out_dir, "figures", f"curves_layer{layer}_head{head}.png")))
  drawn = [p for p in drawn if p]
  headline, flags = scan.headline(), scan.flags()
  json_path = os.path.join(out_dir, "report.json")
  rundir.write_json(json_path, {"config": scan.config.__dict__, "headline": headline,
                                "flags": flags, "units": [
                                    {k: v for k, v in u.items() if k != "rows"}
                                    for u in scan.units]})
  lines = [f"# {title}", "", *setup, ""]
  lines += ["## Headline", "",
            "Per family and head: the area under agreement against proxy size (log axis "
            "scaled to [0, 1]) in distribution, and its gap to the split where it falls "
            "most, with 95 % bootstrap intervals over strings; the same gap for the chance "
            "control (mean over draws) and for the family fitted on another split; how "
            "many settings are flagged.", ""]
  lines += report.table(
      ("family", "head", "area in distribution", "worst split", "gap", "chance gap",
       "fitted-elsewhere gap", "flags"),
      [(h["family"], f"{h['layer']}.{h['head']}",
        _with_interval(h["area_iid"], h["area_iid_lo"], h["area_iid_hi"]), h["worst_split"],
        _with_interval(h["gap"], h["gap_lo"], h["gap_hi"]),
        _num(h["chance_gap"]) + (f" ({h['chance_kind']}, {h['chance_draws']} draws)"
                                 if h["chance_kind"] else ""),
        _num(h["fit_split_gap"]) + (f" ({h['fit_split']})" if h["fit_split"] else ""),
        str(h["flags"]) + (f" ({', '.join(h['flagged_splits'])})" if h["flags"] else ""))
       for h in headline])
  faithful = scan.config.faithful
  lines += ["", "## Flags", "",
            f"A setting is flagged where its agreement holds in distribution (the interval's "
            f"low end at least {faithful}) and its interval on another split lies wholly "
            f"below {faithful}. Direction: the proxy's accuracy there below the model's "
            "(under-estimates) or above. Breaks at: the bucket with the largest gap at equal "
            "composition of the group it is matched on, against the in-distribution "
            "agreement of the same cells.", ""]
  if not flags:
    lines.append("No setting is flagged.")
  else:
    lines += report.table(
        ("family", "head", "setting", "split", "agreement in distribution", "agreement",
         "direction", "breaks at", "gap there"),
        [(f["family"], f"{f['layer']}.{f['head']}", f["setting"], f["split"],
          _with_interval(f["agreement_iid"], f["agreement_lo_iid"], f["agreement_hi_iid"]),
          _with_interval(f["agreement"], f["agreement_lo"], f["agreement_hi"]),
          f["direction"],
          (f"{f['breaks']['group']} {f['breaks']['bucket']} (matched on "
           f"{f['breaks']['matched_on']}; n {f['breaks']['n']}, coverage "
           f"{f['breaks']['coverage']:.2f})") if f["breaks"] else "-",
          _with_interval(f["breaks"]["gap"], f["breaks"]["gap_lo"], f["breaks"]["gap_hi"])
          if f["breaks"] else "-") for f in flags])
  lines += ["", "## Areas by split", ""]
  for u in (u for u in scan.units if u["role"] == "proxy"):
    chance = scan.units_of("chance", u["family"], u["layer"], u["head"])
    fitted = scan.units_of("fit_split", u["family"], u["layer"], u["head"])
    values = ",".join(map(str, u["values"])) or "no sweep"
    lines += [f"**{u['family']}, layer {u['layer']} head {u['head']}** ({values})", ""]
    lines += report.table(
        ("split", "area", "area of 1 - TV", "gap", "chance area", "fitted-elsewhere area"),
        [(s, _with_interval(a["area"], a["area_lo"], a["area_hi"]),
          _with_interval(a["area_tv"], a["area_tv_lo"], a["area_tv_hi"]),
          _with_interval(a["gap"], a["gap_lo"], a["gap_hi"]) if s != u["in_distribution"]
          else "-",
          _num(np.mean([c["areas"][s]["area"] for c in chance])) if chance else "-",
          _num(fitted[0]["areas"][s]["area"]) if fitted else "-")
         for s, a in u["areas"].items()])
    lines.append("")
  lines += ["## Figures", ""]
  lines += [f"![{os.path.basename(p)}](figures/{os.path.basename(p)})" for p in drawn]
  md_path = os.path.join(out_dir, "report.md")
  atomic.write_text(md_path, "\n".join(lines) + "\n")
  return [md_path, json_path, *drawn]
