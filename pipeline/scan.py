"""The illusion scan: which simplified explanations of a model mislead out of distribution,
and where.

Every proxy family (a registered kind that is no control) is swept over its scan sweep
(`ProxyKind.scan_sweep`; values the model does not admit are left out) at every head asked
for, on the task's in-distribution split and every other test split, beside its controls:
  chance        every kind registered as a control of the family (`ProxyKind.control_of`:
                a random subspace for svd, random centroids for k-means, an untrained
                dictionary for the sae), over the same sweep, at `draws` seeds;
  fit_split     the family fitted on the task's `control_fit_split` (Dyck: val_depth)
                instead of the training strings, where the task has one.
Each (kind, head, seed, fitting split) is one evaluation: its whole sweep on every split in
one compiled program per batch shape (`evaluation.evaluate`). What it adds up to is saved as
<out>/units/<stem>.json, so a rerun reads finished units back.

Read from each unit:
  area   faithfulness integrated over proxy size: the area under agreement (and under
         1 - TV) against log2 of the sweep's value, the axis scaled to [0, 1] (a kind
         without a sweep: its one agreement), with a bootstrap interval over strings (over
         clusters where the task has them); `gap` is the in-distribution area minus a
         split's, with the interval of the difference (the splits are independent draws).
  flags  a setting faithful in distribution (the lower end of its agreement interval at
         least `faithful`) whose agreement interval on another split lies wholly below
         `faithful`: an explanation that holds where it was checked and fails elsewhere.
         With its direction (the proxy's accuracy below the model's: it under-estimates
         the model there) and where it breaks: the bucket of the task's breakdown group
         (Dyck: key depth) with the largest gap at equal composition of the group it is
         matched on (Dyck: distance), with a bootstrap interval over strings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence

import jax
import numpy as np

import proxies
from models import mesh as mesh_lib
from pipeline import errors, evaluation, rundir
from proxies import faithfulness, results

ROLES = ("proxy", "chance", "fit_split")
MIN_BUCKET = 30  # scored positions a bucket needs to be named where a proxy breaks
MIN_COVERAGE = 0.5  # of its positions in cells the in-distribution split also has


@dataclasses.dataclass(frozen=True)
class ScanConfig:
  """What a scan covers and how its flags are read; every default in one place."""

  heads: tuple[tuple[int, int], ...] = ()  # () every head of every layer
  families: tuple[str, ...] = ()  # () every registered kind that is no control
  splits: tuple[str, ...] = ()  # () every test split of the task
  faithful: float = 0.95  # agreement a setting must hold in distribution (interval's low end)
  draws: int = 3  # seeds of each chance control
  controls: bool = True
  n_fit: int | None = None  # fitting strings (None: evaluation.N_FIT, or all if fewer)
  batch_size: int = 256
  n_bootstrap: int = 1000
  seed: int = 0  # of the bootstrap

  def __post_init__(self):
    errors.check_range("draws", self.draws, 1, 100)
    if not 0 < self.faithful <= 1:
      raise errors.RunError(f"faithful={self.faithful} is out of range; choose 0 < x <= 1")


@dataclasses.dataclass(frozen=True)
class Unit:
  """One evaluation of the scan: a kind's sweep at one head, in one role of a family."""

  family: str
  role: str  # one of ROLES
  spec: proxies.ProxySpec
  fit_split: str | None = None

  @property
  def stem(self) -> str:
    return evaluation.file_stem(self.spec, self.fit_split)


def families(names: Sequence[str] = ()) -> list[str]:
  """The families a scan covers: `names`, or every registered kind that is no control."""
  every = [k.name for k in proxies.KINDS.values() if k.control_of is None]
  for name in names:
    errors.check_choice("family", name, every)
  return list(names) or every


def sweep_of(model, kind: str, head, n_vectors: int | None = None) -> tuple[int, ...]:
  """The kind's scan sweep (default: its default sweep) at `head`, less the values the
  model does not admit there (a rank above the head's width; K above `n_vectors`, the
  fitting vectors per site)."""
  known = proxies.KINDS[kind]
  if known.sweep is None:
    return ()
  admitted = []
  for value in known.scan_sweep or known.sweep_default:
    try:
      proxies.make_spec(model, kind, [value], heads=[head], n_vectors=n_vectors)
    except proxies.ProxyError:
      continue
    admitted.append(value)
  return tuple(admitted)


def plan(task, model, config: ScanConfig) -> list[Unit]:
  """Every unit of the scan, each spec checked against the model (and the fitting vectors)
  before anything runs."""
  model = faithfulness.site_model(model)
  heads = config.heads or tuple((l, h) for l in range(model.n_layers)
                                for h in range(model.n_heads))
  # Before the sweeps: `sweep_of` drops the values a head refuses, not a head that is not there.
  proxies.check_heads(heads, model)
  fit_split = getattr(task, "control_fit_split", None) if config.controls else None
  n_fit = evaluation.n_fit_of(task, config.n_fit)
  n_vectors = evaluation.fitting_vectors(task, n_fit)
  if fit_split:
    n_vectors = min(n_vectors, evaluation.fitting_vectors(
        task, evaluation.fit_strings(task, n_fit, fit_split), fit_split))
  units = []
  for family in families(config.families):
    known = proxies.KINDS[family]
    controls = [k for k in proxies.KINDS.values() if k.control_of == family]
    for head in heads:
      if not all(s in model.sites for s in known.sites):
        continue  # a model without the family's sites (an inline pattern) gets none
      values = sweep_of(model, family, head, n_vectors)
      if known.sweep and not values:
        continue
      make = lambda kind, **options: proxies.make_spec(model, kind, values, heads=[head],
                                                       options=options)
      units.append(Unit(family, "proxy", make(family)))
      if not config.controls:
        continue
      for control in controls:
        seeds = range(config.draws) if "seed" in control.options else [None]
        units += [Unit(family, "chance", make(control.name, **({} if s is None else {"seed": s})))
                  for s in seeds]
      if fit_split and known.fits_on == "activations":
        units.append(Unit(family, "fit_split", make(family), fit_split))
  return units


def log_axis(values: Sequence[int]) -> np.ndarray:
  """The sweep's values on the area's axis: log2, scaled to [0, 1]."""
  x = np.log2(np.asarray(values, np.float64))
  return (x - x[0]) / (x[-1] - x[0]) if len(x) > 1 and x[-1] > x[0] else np.zeros_like(x)


def area(y_xP: np.ndarray, values: Sequence[int]) -> np.ndarray:
  """The area under y (last axis: the sweep's settings, in order of `values`) against
  `log_axis`; the one value itself for a sweep of one setting (or none)."""
  if y_xP.shape[-1] == 1:
    return y_xP[..., 0]
  x = log_axis(values)
  return ((y_xP[..., 1:] + y_xP[..., :-1]) / 2 * np.diff(x)).sum(-1)


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None]:
  """The percentile interval of bootstrap samples (None where none was measured)."""
  samples = np.asarray(samples, np.float64)
  samples = samples[np.isfinite(samples)]
  if not samples.size:
    return None, None
  tail = 100 * (1 - level) / 2
  lo, hi = np.percentile(samples, [tail, 100 - tail])
  return float(lo), float(hi)


def curves(result: results.SplitResult, values: Sequence[int], counts_RxN: np.ndarray
           ) -> dict[str, np.ndarray]:
  """Agreement and 1 - TV of every setting over the strings of each resample ([R, P]),
  and their areas ([R]); `counts_RxN`: how often each string is drawn in each."""
  seq = {k: np.asarray(v, np.float64) for k, v in result.sequence.items()}
  n_R = seq["n_scored"] @ counts_RxN.T
  with np.errstate(invalid="ignore", divide="ignore"):
    agreement_RxP = ((seq["agree"] @ counts_RxN.T) / n_R).T
    faithful_tv_RxP = (1 - (seq["tv"] @ counts_RxN.T) / n_R).T
  return {"agreement": agreement_RxP, "area": area(agreement_RxP, values),
          "area_tv": area(faithful_tv_RxP, values)}


def matched_gaps(iid: Mapping[str, np.ndarray], ood: Mapping[str, np.ndarray],
                 grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per setting and bucket of the breakdown group: (gap [..., P, G], n [..., G],
  coverage [..., G]), from cell sums (`agree` [..., P, C], `n_scored` [..., C]; `grid`
  lays the cells out as [..., n_group, n_matched]: `tasks.Breakdown.grid`).

  The gap of a bucket is the in-distribution agreement at the bucket's own mix of
  matched-on buckets (the in-distribution cells pooled over the breakdown group, weighted
  by the bucket's positions in each) minus the bucket's agreement. Cells the
  in-distribution split lacks are left out; `coverage` is the share of the bucket kept."""
  a_iid = grid(np.asarray(iid["agree"], np.float64)).sum(-2)  # [..., P, M]
  n_iid = grid(np.asarray(iid["n_scored"], np.float64)).sum(-2)  # [..., M]
  a_ood = grid(np.asarray(ood["agree"], np.float64))  # [..., P, G, M]
  n_ood = grid(np.asarray(ood["n_scored"], np.float64))  # [..., G, M]
  with np.errstate(invalid="ignore", divide="ignore"):
    rate_iid = np.nan_to_num(a_iid / n_iid[..., None, :])  # [..., P, M]
    kept = np.where((n_iid > 0)[..., None, :], n_ood, 0.0)  # [..., G, M]
    weights = kept / kept.sum(-1, keepdims=True)
    reference = (rate_iid[..., None, :] * weights[..., None, :, :]).sum(-1)  # [..., P, G]
    n_G = n_ood.sum(-1)
    agreement = a_ood.sum(-1) / n_G[..., None, :]
    coverage = kept.sum(-1) / n_G
  return reference - agreement, n_G, coverage


def breaks(iid: results.SplitResult, ood: results.SplitResult, breakdown, labels,
           grid, counts_iid: np.ndarray, counts_ood: np.ndarray, settings: Sequence[int]
           ) -> dict[int, dict | None]:
  """For each of `settings`: the breakdown bucket with the largest matched gap (of the
  buckets with at least MIN_BUCKET scored positions, MIN_COVERAGE of them in cells the
  in-distribution split has too), with its interval over strings of both splits resampled;
  None where no bucket qualifies."""
  cells_iid = {k: np.asarray(v, np.float64) for k, v in iid.by_sequence[breakdown.cells].items()}
  cells_ood = {k: np.asarray(v, np.float64) for k, v in ood.by_sequence[breakdown.cells].items()}
  gap_PxG, n_G, coverage_G = matched_gaps({k: v.sum(-2) for k, v in cells_iid.items()},
                                          {k: v.sum(-2) for k, v in cells_ood.items()}, grid)

  def resampled(cells, counts_RxN):  # [..., N, C] -> [R, ..., C]
    return {k: np.moveaxis(np.einsum("...nc,rn->...rc", v, counts_RxN), -2, 0)
            for k, v in cells.items()}

  gap_RxPxG = matched_gaps(resampled(cells_iid, counts_iid), resampled(cells_ood, counts_ood),
                           grid)[0]
  out = {}
  for p in settings:
    ok = (n_G >= MIN_BUCKET) & (coverage_G >= MIN_COVERAGE) & np.isfinite(gap_PxG[p])
    if not ok.any():
      out[p] = None
      continue
    g = int(np.argmax(np.where(ok, gap_PxG[p], -np.inf)))
    lo, hi = interval(gap_RxPxG[:, p, g])
    out[p] = {"group": breakdown.group, "matched_on": breakdown.matched_on,
              "bucket": labels[g], "gap": float(gap_PxG[p, g]), "gap_lo": lo, "gap_hi": hi,
              "n": int(n_G[g]), "coverage": float(coverage_G[g])}
  return out


def setting_label(kind: str, value: int | None) -> str:
  """'svd rank 4', 'kmeans K 64', 'onehot': the kind and its sweep's value, named as in
  every other table (`ProxyKind.sweep_name`)."""
  name = proxies.KINDS[kind].sweep_name
  return f"{kind} {name} {value}" if name else kind


def flag(iid_row: Mapping, row: Mapping, faithful: float) -> str | None:
  """'under-estimates' / 'over-estimates' where the setting holds in distribution (its
  agreement's lower end >= `faithful`) and fails on this split (its upper end below);
  None otherwise. The direction compares the proxy's accuracy with the model's there."""
  lo, hi = iid_row.get("agreement_lo"), row.get("agreement_hi")
  if lo is None or hi is None or lo < faithful or hi >= faithful:
    return None
  return ("under-estimates" if row["accuracy_proxy"] < row["accuracy_model"]
          else "over-estimates")


def measure(task, model, params, unit: Unit, config: ScanConfig) -> dict:
  """One unit evaluated (`evaluation.evaluate`, keeping the breakdown's cell sums per
  string) and `read`."""
  breakdown = getattr(task, "breakdown", None)
  e = evaluation.evaluate(
      task, model, params,
      evaluation.EvalConfig(unit.spec, config.splits,
                            n_fit=evaluation.fit_strings(
                                task, evaluation.n_fit_of(task, config.n_fit), unit.fit_split),
                            batch_size=config.batch_size, seed=config.seed,
                            n_bootstrap=config.n_bootstrap, fit_split=unit.fit_split),
      sequence_groups=(breakdown.cells,) if breakdown else ())
  found = read(unit, e.results, e.rows, settings=e.settings,
               in_distribution=getattr(task, "in_distribution", "iid"), breakdown=breakdown,
               groups=task.groups, clusters=task.clusters, config=config)
  return {**found, "compilations": e.compilations}


def read(unit: Unit, split_results: Mapping[str, results.SplitResult], rows: Sequence[dict],
         *, settings: int, in_distribution: str, breakdown, groups, clusters,
         config: ScanConfig) -> dict:
  """What one unit's sums say: the areas of every split (with intervals, and the gap from
  `in_distribution`'s with its interval) and, for the proxy role, its flags, each with
  where it breaks (`breaks`, when the task has a `breakdown`). `rows`: the evaluation's,
  split by split, `settings` per split; `clusters`: split -> [N] ids or None. Plain JSON."""
  splits = list(split_results)
  iid = in_distribution
  if iid not in splits:
    raise errors.RunError(f"the scan reads gaps against the in-distribution split {iid!r}; "
                          f"add it to the splits ({', '.join(splits)})")
  values = unit.spec.values
  counts = {split: results.resample_counts(split_results[split].n_strings,
                                           config.n_bootstrap, config.seed + i,
                                           clusters(split))
            for i, split in enumerate(splits)}
  drawn = {s: curves(split_results[s], values, counts[s]) for s in splits}
  whole = {s: curves(split_results[s], values, np.ones((1, split_results[s].n_strings)))
           for s in splits}
  areas = {}
  for split in splits:
    entry = {}
    for name in ("area", "area_tv"):
      entry[name] = float(whole[split][name][0])
      entry[f"{name}_lo"], entry[f"{name}_hi"] = interval(drawn[split][name])
    entry["gap"] = float(whole[iid]["area"][0] - whole[split]["area"][0])
    entry["gap_lo"], entry["gap_hi"] = interval(drawn[iid]["area"] - drawn[split]["area"])
    areas[split] = entry
  by_setting = {(r["split"], i % settings): r for i, r in enumerate(rows)}
  sweep = proxies.KINDS[unit.spec.kind].sweep
  flags = []
  for split in (s for s in splits if s != iid and unit.role == "proxy"):
    flagged = {p: d for p in range(settings)
               if (d := flag(by_setting[(iid, p)], by_setting[(split, p)], config.faithful))}
    where = {}
    if breakdown is not None and flagged:
      where = breaks(split_results[iid], split_results[split], breakdown,
                     groups[breakdown.group], lambda c: breakdown.grid(c, groups),
                     counts[iid], counts[split], list(flagged))
    for p, direction in flagged.items():
      iid_row, row = by_setting[(iid, p)], by_setting[(split, p)]
      flags.append({
          "split": split, "value": row.get(sweep) if sweep else None, "direction": direction,
          **{f"{k}_iid": iid_row[k] for k in ("agreement", "agreement_lo", "agreement_hi")},
          **{k: row[k] for k in ("agreement", "agreement_lo", "agreement_hi",
                                 "accuracy_model", "accuracy_proxy")},
          "breaks": where.get(p)})
  layer, head = unit.spec.heads[0]
  return {"family": unit.family, "role": unit.role, "kind": unit.spec.kind,
          "layer": layer, "head": head, "options": dict(unit.spec.options),
          "values": list(values), "fit_split": unit.fit_split or "train", "stem": unit.stem,
          "splits": splits, "in_distribution": iid, "rows": list(rows), "areas": areas,
          "flags": flags}


def _settings_key(config: ScanConfig) -> dict:
  """The settings a saved unit must share with this scan to be read back (as JSON has them)."""
  return json.loads(json.dumps({k: v for k, v in dataclasses.asdict(config).items()
                                if k not in ("heads", "families", "draws", "controls")}))


def run(task, model, params, config: ScanConfig, out_dir: str | None = None, log=print
        ) -> "Scan":
  """Plans and measures every unit (`plan`, `measure`); with `out_dir`, each unit is
  written to <out_dir>/units/<stem>.json as it finishes and read back on a rerun of the same
  settings, so an interrupted scan resumes where it stopped."""
  model = faithfulness.site_model(model)
  units = plan(task, model, config)
  measured, last_kind = [], None
  for i, unit in enumerate(units, 1):
    path = os.path.join(out_dir, "units", unit.stem + ".json") if out_dir else None
    if path and os.path.exists(path):
      saved = json.load(open(path, encoding="utf-8"))
      if saved.get("settings") == _settings_key(config) and saved.get("role") == unit.role:
        measured.append(saved)
        log(f"[{i}/{len(units)}] {unit.stem}: read back")
        continue
    if last_kind not in (None, unit.spec.kind):
      # Compiled code stays mapped while its cache holds it: the default Dyck scan ran out
      # of memory mappings (LLVM "Cannot allocate memory") at its 31st unit. Another kind
      # reuses none of the last kind's programs; the draws of one kind reuse them all.
      jax.clear_caches()
    last_kind = unit.spec.kind
    start = time.perf_counter()
    found = {**measure(task, model, params, unit, config), "settings": _settings_key(config)}
    found["seconds"] = time.perf_counter() - start
    found["device"] = jax.devices()[0].device_kind  # a resumed scan may mix machines
    found = json.loads(json.dumps(found))  # as a rerun reads it back
    if path and mesh_lib.is_main():
      rundir.write_json(path, found)
    measured.append(found)
    log(f"[{i}/{len(units)}] {unit.stem} ({unit.role} of {unit.family}): "
        f"{len(found['values']) or 1} setting(s) x {len(found['splits'])} splits in "
        f"{found['seconds']:.1f} s, {len(found['flags'])} flag(s)")
  return Scan(config, measured)


@dataclasses.dataclass
class Scan:
  """Every measured unit of a scan, and what a reader asks of them."""

  config: ScanConfig
  units: list[dict]

  def units_of(self, role: str, family: str, layer: int, head: int) -> list[dict]:
    """The units of one role of a family at one head (a chance control's draws)."""
    return [u for u in self.units if (u["role"], u["family"], u["layer"], u["head"])
            == (role, family, layer, head)]

  def headline(self) -> list[dict]:
    """One row per family and head: its in-distribution area, the split with the largest
    area gap and that gap with its interval, the chance control's gap there (mean over
    draws) and the fitting-split control's, and how many settings are flagged."""
    out = []
    for u in (u for u in self.units if u["role"] == "proxy"):
      iid = u["in_distribution"]
      others = [s for s in u["splits"] if s != iid]
      worst = max(others, key=lambda s: u["areas"][s]["gap"]) if others else iid
      a = u["areas"][worst]
      chance = self.units_of("chance", u["family"], u["layer"], u["head"])
      fitted = self.units_of("fit_split", u["family"], u["layer"], u["head"])
      mean = lambda us, s, k: (float(np.mean([c["areas"][s][k] for c in us])) if us else None)
      out.append({
          "family": u["family"], "layer": u["layer"], "head": u["head"],
          "values": u["values"], "area_iid": u["areas"][iid]["area"],
          "area_iid_lo": u["areas"][iid]["area_lo"], "area_iid_hi": u["areas"][iid]["area_hi"],
          "worst_split": worst, "area_worst": a["area"], "gap": a["gap"],
          "gap_lo": a["gap_lo"], "gap_hi": a["gap_hi"],
          "chance_kind": chance[0]["kind"] if chance else None, "chance_draws": len(chance),
          "chance_area_iid": mean(chance, iid, "area"), "chance_gap": mean(chance, worst, "gap"),
          "fit_split": fitted[0]["fit_split"] if fitted else None,
          "fit_split_area_iid": mean(fitted, iid, "area"),
          "fit_split_gap": mean(fitted, worst, "gap"),
          "flags": len(u["flags"]),
          "flagged_splits": sorted({f["split"] for f in u["flags"]})})
    return out

  def flags(self) -> list[dict]:
    """Every flagged setting, with its family, head, split, direction and where it breaks;
    labelled here, not where it was measured, so that units read back are named alike."""
    return [{"family": u["family"], "layer": u["layer"], "head": u["head"], **f,
             "setting": setting_label(u["kind"], f["value"])}
            for u in self.units if u["role"] == "proxy" for f in u["flags"]]

  def curve(self, unit: dict, split: str) -> tuple[list[int], list[float]]:
    """(sweep values, agreement of each) of one unit on one split."""
    rows = [r for r in unit["rows"] if r["split"] == split]
    return unit["values"] or [1], [r["agreement"] for r in rows]
