"""Does a proxy's depth gap track the model's own depth generalization?

  python -m experiments.checkpoint_study --runs=runs/reproduce-reduced/dyck-k20-m10-s0,...

Depth generalization moves between checkpoints of one training run while in-distribution
accuracy stays saturated. For each run this command reads every kept checkpoint, measures
it on the *validation* splits only (val_iid at Murty positions, val_depth closes deeper
than the training depth m), and among those with val_iid accuracy >= --min_iid chooses the
one that generalizes deepest and the one that generalizes least. Both are then simplified
by every family (head 0 of --layer, default the last) and evaluated on the test splits:
the deep-close gap of each proxy (agreement on iid closes at key depth < m minus agreement
on unseen_depth closes at key depth > m) at both checkpoints, paired over runs. If the
proxies' gap grows when the model generalizes better, a proxy fitted in distribution
misses exactly what the model learned; if it follows the model, it does not.

Writes <out>/checkpoints.json (every checkpoint's validation numbers, the choice, every
evaluated row) and <out>/checkpoints.md. Rerunning reads finished evaluations back
(<run>/eval/checkpoint-<step>/).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

import numpy as np

import proxies
from experiments import aggregate, cli
from experiments.report import table
from models import atomic, checkpoints, training
from pipeline import api, evaluation, rundir, tasks
from proxies import faithfulness

SPLITS = ("iid", "unseen_depth")
SWEEPS = {"svd": (4, 16), "kmeans": (64,), "onehot": (), "weight_svd": (16,)}


def validation(task, model_cfg, params) -> dict[str, float]:
  """The model's accuracy on the validation splits: val_iid at Murty positions, val_depth
  at closes deeper than the training depth."""
  accuracy = tasks.model_accuracy(model_cfg, task.decision(), task.pad_id)
  deep = dict(task.eval_arrays("val_depth"))
  deep["scored"] = deep["scored"] & (deep["depth"] > task.config.max_depth)
  return {"val_iid": accuracy(params, task.eval_arrays("val_iid")),
          "val_deep": accuracy(params, deep)}


def choose(checked: list[dict], min_iid: float) -> tuple[dict, dict] | None:
  """(deepest-generalizing, least-generalizing) of the checkpoints with val_iid >=
  min_iid, or None when fewer than two qualify."""
  ok = [c for c in checked if c["val_iid"] >= min_iid]
  if len(ok) < 2:
    return None
  return max(ok, key=lambda c: c["val_deep"]), min(ok, key=lambda c: c["val_deep"])


def specs(model, layer: int, log=print) -> list[proxies.ProxySpec]:
  """`SWEEPS` on head 0 of `layer` of `model` (a SiteModel or ModelConfig). The sweeps are
  sized for the default model; on a smaller one, a value its kind refuses there (a rank
  above the head's width) is left out and said, not run and mislabelled."""
  model = faithfulness.site_model(model)
  out = []
  for name, values in SWEEPS.items():
    kept = [v for v in values if _admits(model, name, v, layer)]
    if len(kept) < len(values):
      log(f"  {name}: {', '.join(str(v) for v in values if v not in kept)} left out "
          "(beyond what this model admits)")
    if kept or not values:
      out.append(proxies.make_spec(model, name, kept, heads=[(layer, 0)]))
  return out


def _admits(model, name: str, value: int, layer: int) -> bool:
  try:
    proxies.make_spec(model, name, [value], heads=[(layer, 0)])
  except proxies.ProxyError:
    return False
  return True


def evaluate_step(task, model_cfg, params, run_dir: str, step: int, layer: int,
                  log) -> list[dict]:
  eval_dir = os.path.join(run_dir, "eval", f"checkpoint-{step}")
  rows = []
  run = api.Run(task, model_cfg, params)
  for spec in specs(model_cfg, layer, log):
    path = os.path.join(eval_dir, evaluation.file_stem(spec) + ".json")
    if os.path.exists(path):
      rows += json.load(open(path, encoding="utf-8"))
      continue
    # Fitted on 1000 training strings (`evaluation.N_FIT`), or all if fewer.
    result = run.evaluate(run.fit_spec(spec), SPLITS, batch_size=128)
    evaluation.write(result, eval_dir, evaluation.file_stem(spec))
    log(f"  step {step} {spec.kind}: {result.settings} setting(s)")
    rows += result.rows
  return rows


def deep_gap(rows: list[dict]) -> dict[aggregate.Setting, dict[str, float]]:
  """setting -> the deep-close gap, the proxy's and the model's test deep accuracy."""
  out: dict = {}
  for r in rows:
    out.setdefault(aggregate.setting(r), {})[r["split"]] = r
  gaps = {}
  for s, by_split in out.items():
    iid, deep = by_split.get("iid"), by_split.get("unseen_depth")
    if iid is None or deep is None or deep.get("agreement_deep") is None:
      continue
    gaps[s] = {"gap": iid["agreement_shallow"] - deep["agreement_deep"],
               "accuracy_proxy_deep": deep["accuracy_proxy_deep"],
               "accuracy_model_deep": deep["accuracy_model_deep"]}
  return gaps


def study(run_dirs: Sequence[str], min_iid: float, layer: int | None, log=print) -> dict:
  runs = []
  for run_dir in run_dirs:
    task, model_cfg, train_cfg = tasks.from_run_config(rundir.read_config(run_dir), run_dir)
    ckpt = checkpoints.Checkpoints(run_dir, max_to_keep=None)
    steps = ckpt.steps()
    ckpt.close()
    checked = []
    for step in steps:
      params = training.restore_params(run_dir, model_cfg, train_cfg, step=step)
      checked.append({"step": step, **validation(task, model_cfg, params)})
      log(f"{run_dir} step {step}: val_iid {checked[-1]['val_iid']:.4f} "
          f"val_deep {checked[-1]['val_deep']:.4f}")
    entry = {"run": run_dir, "seed": train_cfg.seed, "checkpoints": checked, "chosen": None}
    chosen = choose(checked, min_iid)
    if chosen is not None:
      entry["chosen"] = {}
      last = model_cfg.n_layers - 1 if layer is None else layer
      for name, c in zip(("generalizes", "does_not"), chosen):
        params = training.restore_params(run_dir, model_cfg, train_cfg, step=c["step"])
        rows = evaluate_step(task, model_cfg, params, run_dir, c["step"], last, log)
        entry["chosen"][name] = {**c, "rows": rows}
    runs.append(entry)
  return {"min_iid": min_iid, "runs": runs}


def report(found: dict) -> list[str]:
  chosen = [r for r in found["runs"] if r["chosen"]]
  lines = ["# Checkpoint study: does a proxy's depth gap track the model's?", "",
           "Made by `python -m experiments.checkpoint_study` (docstring: what it does); "
           "numbers in `checkpoints.json` beside this page.", "",
           f"Per run, of the checkpoints with val_iid accuracy ≥ {found['min_iid']}, the one "
           "most accurate on val_depth closes deeper than the training depth (*generalizes*) "
           "and the least accurate (*does not*); chosen on validation splits only. Runs with "
           "fewer than two such checkpoints are listed without a choice.", ""]
  body = []
  for r in found["runs"]:
    if not r["chosen"]:
      body.append([str(r["seed"]), "–", "–", "–", "–", f"{len(r['checkpoints'])} kept, "
                   "fewer than two qualify"])
      continue
    g, d = r["chosen"]["generalizes"], r["chosen"]["does_not"]
    model = lambda c: next(iter(deep_gap(c["rows"]).values()))["accuracy_model_deep"]
    body.append([str(r["seed"]), f"{g['step']} / {d['step']}",
                 f"{g['val_iid']:.3f} / {d['val_iid']:.3f}",
                 f"{g['val_deep']:.3f} / {d['val_deep']:.3f}",
                 f"{model(g):.3f} / {model(d):.3f}", ""])
  lines += table(["seed", "step (generalizes / does not)", "val_iid", "val_depth deep",
                   "test deep accuracy (unseen_depth)", ""], body) + [""]
  if len(chosen) < 2:
    return lines + ["Fewer than two runs have a contrast: no interval over runs.", ""]
  settings = sorted({s for r in chosen for c in r["chosen"].values()
                     for s in deep_gap(c["rows"])},
                    key=lambda s: (aggregate.families().index(s[0]), s[2] or 0))
  lines += ["Paired over runs (mean [95 % interval] over the runs with a contrast): the "
            "model's test deep accuracy and each proxy's deep-close gap at the checkpoint "
            "that generalizes minus at the one that does not. A gap difference above 0: "
            "the proxy falls further behind the model exactly when the model generalizes "
            "deeper.", ""]
  model_diff = [next(iter(deep_gap(r["chosen"]["generalizes"]["rows"]).values()))
                ["accuracy_model_deep"] - next(iter(deep_gap(
                    r["chosen"]["does_not"]["rows"]).values()))["accuracy_model_deep"]
                for r in chosen]
  body = [["model test deep accuracy", "", _fmt(aggregate.seed_interval(model_diff))]]
  for s in settings:
    gap_g, gap_d, diffs = [], [], []
    for r in chosen:
      a = deep_gap(r["chosen"]["generalizes"]["rows"]).get(s)
      b = deep_gap(r["chosen"]["does_not"]["rows"]).get(s)
      if a and b:
        gap_g.append(a["gap"])
        gap_d.append(b["gap"])
        diffs.append(a["gap"] - b["gap"])
    body.append([aggregate.setting_label(s),
                 f"{_fmt(aggregate.seed_interval(gap_g))} / {_fmt(aggregate.seed_interval(gap_d))}",
                 _fmt(aggregate.seed_interval(diffs))])
  lines += table(["", "deep gap (generalizes / does not)", "difference"], body) + [""]
  return lines


def _fmt(interval) -> str:
  mean, lo, hi = interval
  if np.isnan(mean):
    return "–"
  return f"{mean:.3f}" if lo == hi else f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def parse(argv: Sequence[str]) -> argparse.Namespace:
  parser = cli.Parser(prog="python -m experiments.checkpoint_study", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--runs", required=True, help="run directories, separated by commas")
  parser.add_argument("--out", default=os.path.join(rundir.RUNS_ROOT, "checkpoint-study"))
  parser.add_argument("--min_iid", type=float, default=0.98,
                      help="val_iid accuracy a checkpoint needs to be chosen (default: 0.98)")
  parser.add_argument("--layer", type=int, default=None,
                      help="the layer whose head 0 is simplified (default: the last)")
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
  args = parse(argv)
  cli.check_range("min_iid", args.min_iid, 0.0, 1.0)
  run_dirs = [r for r in args.runs.split(",") if r]
  for run_dir in run_dirs:
    rundir.read_config(run_dir)  # every run exists before anything runs
  cli.ensure_writable(args.out)
  found = study(run_dirs, args.min_iid, args.layer)
  rundir.write_json(os.path.join(args.out, "checkpoints.json"), found)
  atomic.write_text(os.path.join(args.out, "checkpoints.md"), "\n".join(report(found)) + "\n")
  print(f"wrote {args.out}/checkpoints.md and checkpoints.json")


if __name__ == "__main__":
  cli.run_main(main, bad_input=(checkpoints.CheckpointError,))
