"""Reproduce the Dyck half of the paper in one command.

  python -m experiments.reproduce --setting=smoke   # tiny, ~1.5 min on 2 CPU cores: try it
  python -m experiments.reproduce                   # reduced: 3 seeds, < 30 min on 2 CPU cores
  python -m experiments.reproduce --setting=full    # 5 seeds, paper-sized sweeps: GPU or TPU
  python -m experiments.reproduce --setting=full --depths=8,10,12   # seeds x depths x proxies

Trains every seed, fits every registered proxy kind (svd, kmeans, onehot, weight_svd, and any
kind registered beside them) on the head of each layer, evaluates every split, and writes under <out> (default runs/reproduce-<setting>):
  <out>/<run per seed>/          the runs, with their own eval/ tables
  <out>/rows.csv, by_group.csv   every evaluation row of every seed
  <out>/figures/*.png            see experiments/figures.py
  <out>/report.md                tables with intervals over seeds, and the figures
Rerunning resumes: trained runs are reused and evaluations already written are read back,
so a preempted batch job is restarted with the same command (README "Batch jobs").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Sequence

import proxies
from data import dyck_splits
from experiments import cli, depth_controls, figures, mechanism, report
from pipeline import api, evaluation, rundir, tasks, training_run
from models import checkpoints, mesh, training, transformer


@dataclasses.dataclass(frozen=True)
class Plan:
  seeds: tuple[int, ...]
  ranks: tuple[int, ...]  # svd and weight_svd
  ks: tuple[int, ...]  # kmeans, clustering queries and keys jointly
  # K of the last layer's head, fitted jointly and separately (the matching head needs about
  # #types x #depths clusters); its query/key variance and attention landing are measured
  # (experiments/mechanism.py) with these fits. Default: `ks`.
  last_layer_ks: tuple[int, ...] = ()
  data: dyck_splits.DyckConfig = dyck_splits.DyckConfig()
  train: training.TrainConfig = training.TrainConfig()  # its seed is replaced by each seed
  model: tuple[tuple[str, object], ...] = ()  # ModelConfig fields other than the defaults
  batch_size: int = 256  # evaluation sequences per batch
  # The splits proxies are evaluated on (default: every test split of the task); the
  # model alone is measured on every test split under each of `model_scorings`.
  splits: tuple[str, ...] = ()
  model_scorings: tuple[str, ...] = ("murty", "all_closes")
  # Sweeps of particular kinds, overriding the values for their sweep's name (kind -> values).
  kind_values: tuple[tuple[str, tuple[int, ...]], ...] = ()
  # The fitting-distribution control: the last layer's data-fitted proxies fitted on this
  # split too (the last layer's head is the one that matches closes by depth).
  fit_split: str | None = "val_depth"

  def sweep_values(self, kind: proxies.ProxyKind) -> tuple[int, ...]:
    """The values `kind` is swept over: its own (`kind_values`), else the plan's for its
    sweep's name (`ranks`, `ks`), else the kind's default sweep; () for a kind without one."""
    by_sweep = {"rank": self.ranks, "k": self.ks}  # the plan's values, by sweep name
    if kind.sweep is None:
      return ()
    return (dict(self.kind_values).get(kind.name) or by_sweep.get(kind.sweep)
            or kind.sweep_default)


PLANS = {
    # About a minute and a half on a 2-core CPU, to try the whole pipeline (and what the
    # tests run): Dyck-(4, 4) strings of up to 30 brackets, a 2-layer model 16 wide trained
    # 300 steps, one seed, 100 strings per test split. The time goes to compiling the 8
    # evaluation programs (2 layers x 4 families; about 10 s each), so each extra seed
    # (`--seeds=0,1` for intervals over seeds) adds about a minute. Rank 8 is the head's
    # full width, so its agreement is 1 by construction: a check, not a finding.
    "smoke": Plan(seeds=(0,), ranks=(1, 2, 8), ks=(2, 8),
                  data=dyck_splits.DyckConfig(n_types=4, max_depth=4, max_length=30,
                                              n_train=2000, n_test=100, short_length=14,
                                              ood_depth_cap=8),
                  train=training.TrainConfig(steps=300, batch_size=32, warmup_steps=30,
                                             log_every=100, eval_every=300,
                                             checkpoint_every=300),
                  model=(("d_model", 16), ("d_head", 8), ("d_mlp", 32)), batch_size=128),
    # Five seeds on a 2-core CPU in about an hour and a half: fewer training steps, 500
    # strings per test split, coarser sweeps (the report gives the measured time). Every
    # checkpoint is kept, for the checkpoint study (experiments/checkpoint_study.py). The
    # plain deep sample is measured on the model alone (its closes are unseen_depth's,
    # mostly shallower).
    "reduced": Plan(seeds=(0, 1, 2, 3, 4), ranks=(1, 2, 4, 8, 16), ks=(4, 16, 64, 256),
                    data=dyck_splits.DyckConfig(n_test=500),
                    train=training.TrainConfig(steps=6000, keep=0), batch_size=128,
                    # sae's k beside svd's ranks (an equal number of active dimensions);
                    # K 64 and 256 are cluster counts, not active latents.
                    kind_values=(("sae", (2, 8, 16)),),
                    splits=("iid", "seen_struct", "unseen_struct_short", "unseen_struct_long",
                            "unseen_depth", "long_shallow")),
    # The default training, 2,000 strings per split, the paper-sized sweeps.
    "full": Plan(seeds=(0, 1, 2, 3, 4), ranks=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
                 ks=(2, 4, 8, 16, 32, 64, 128, 256, 512),
                 last_layer_ks=(2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)),
}


def parse(argv: Sequence[str]) -> argparse.Namespace:
  parser = cli.Parser(prog="python -m experiments.reproduce", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--setting", default="reduced", help=f"one of: {', '.join(PLANS)}")
  parser.add_argument("--seeds", type=cli.int_list, default=None,
                      help="model seeds (default: the setting's; at least 3 for intervals)")
  parser.add_argument("--depths", type=cli.int_list, default=None,
                      help="training depths m to sweep, e.g. 8,10,12: one report each under "
                      "<out>/m<depth> (default: the setting's, 10, straight into <out>)")
  parser.add_argument("--out", default=None, help="output directory (default: runs/reproduce-<setting>)")
  parser.add_argument("--data_dir", default=os.path.join(rundir.RUNS_ROOT, "tfds"),
                      help="where the TFDS datasets live (default: runs/tfds)")
  return parser.parse_args(argv)


def specs(plan: Plan, model) -> list[proxies.ProxySpec]:
  """Every registered proxy kind (`proxies.KINDS`) on head 0 of every layer of `model` (a
  `models.sites.SiteModel`), at its default sites and options, swept over the plan's values
  for it (`Plan.sweep_values`), each checked against the model (`proxies.make_spec`). On the
  last layer, the kind the mechanism measurement fits is swept as it fits it (k-means,
  jointly and separately, over `last_layer_ks`: `mechanism.kmeans_specs`), so that its
  fits serve the measurement too."""
  last = model.n_layers - 1
  measured = mechanism.kmeans_specs(model, last, 0, plan.last_layer_ks or plan.ks)
  out = []
  for layer in range(model.n_layers):
    for kind in proxies.KINDS.values():
      if kind.control_of:  # a chance baseline: the illusion scan runs it beside its family
        continue
      if layer == last and kind.name in {s.kind for s in measured}:
        out += measured
        continue
      out.append(proxies.make_spec(model, kind.name, plan.sweep_values(kind),
                                   heads=[(layer, 0)]))
  return out


def evaluate_cached(task, model_cfg, params, spec, run_dir: str, plan: Plan, n_fit: int,
                    log, fit, fit_split: str | None = None) -> tuple[list[dict], list[dict]]:
  """The evaluation of `spec` on `run_dir`, read back if an earlier run wrote it."""
  mesh.barrier(f"cache-{run_dir}-{spec}-{fit_split}")  # every process sees the same files
  eval_dir = os.path.join(run_dir, "eval")
  stem = evaluation.file_stem(spec, fit_split)
  splits = plan.splits or task.splits
  paths = [os.path.join(eval_dir, f"{stem}{suffix}.json") for suffix in ("", "_by_group")]
  if all(os.path.exists(p) for p in paths):
    rows, group_rows = (json.load(open(p, encoding="utf-8")) for p in paths)
    if ({r["split"] for r in rows} == set(splits)
        and all(r.get("n_fit") == n_fit and r.get("scoring") == "murty" for r in rows)):
      return rows, group_rows
  start = time.perf_counter()
  run = api.Run(task, model_cfg, params)
  sweep = (api.Sweep(spec, fit(spec), n_fit) if fit_split is None
           else run.fit_spec(spec, n_fit=n_fit, fit_split=fit_split))
  result = run.evaluate(sweep, splits, batch_size=plan.batch_size)
  if mesh.is_main():
    evaluation.write(result, eval_dir, stem)
  log(f"  {stem}: {result.settings} setting(s) x {len(splits)} splits in "
      f"{time.perf_counter() - start:.1f} s ({result.compilations} compilation(s))")
  return result.rows, result.group_rows


def model_accuracies(task, model_cfg, params, run_dir: str, plan: Plan) -> list[dict]:
  """The model alone on every test split under each of the plan's scorings (written to, or
  read back from, <run>/eval/model_accuracy.json)."""
  path = os.path.join(run_dir, "eval", "model_accuracy.json")
  mesh.barrier(f"model-accuracy-{run_dir}")
  if os.path.exists(path):
    found = json.load(open(path, encoding="utf-8"))
    if {(r["split"], r["scoring"]) for r in found} == {
        (s, sc) for s in task.splits for sc in plan.model_scorings}:
      return found
  found = []
  for scoring in plan.model_scorings:
    accuracy = tasks.model_accuracy(model_cfg, task.decision(scoring), task.pad_id)
    for split in task.splits:
      arrays = task.eval_arrays(split, scoring)
      found.append({"split": split, "scoring": scoring, "accuracy": accuracy(params, arrays),
                    "n": int(arrays["scored"].sum())})
  if mesh.is_main():
    rundir.write_json(path, found)
  return found


def mechanism_cached(task, model_cfg, params, run_dir: str, plan: Plan, n_fit: int, log,
                     fit) -> dict:
  """The last layer's mechanism measurement (experiments/mechanism.py), read back if an
  earlier run wrote it with the same K and fit size."""
  layer, ks = model_cfg.n_layers - 1, list(plan.last_layer_ks or plan.ks)
  path = os.path.join(run_dir, "eval", f"mechanism_layer{layer}_head0.json")
  mesh.barrier(f"mechanism-{run_dir}")
  if os.path.exists(path):
    found = json.load(open(path, encoding="utf-8"))
    if found.get("ks") == ks and found.get("n_fit") == n_fit:
      return found
  start = time.perf_counter()
  found = mechanism.measure(task, model_cfg, params, layer, 0, ks, n_fit, fit)
  if mesh.is_main():
    rundir.write_json(path, found)
  log(f"  mechanism of layer {layer}: {time.perf_counter() - start:.1f} s")
  return found


def reproduce_one_depth(setting: str, plan: Plan, data_dir: str, out: str, log) -> str:
  """Every seed x layer x proxy family at one training depth; returns the report's path."""
  clock = time.perf_counter()
  data_cfg = plan.data
  task = tasks.from_config(data_cfg, data_dir)  # the registered task of the plan's data
  model_cfg = task.model_config(**dict(plan.model))
  n_fit = min(1000, data_cfg.n_train)
  rows, group_rows, mechanisms, model_rows, fit_rows = [], [], [], [], []
  for seed in plan.seeds:
    train_cfg = dataclasses.replace(plan.train, seed=seed)
    run_dir = training_run.default_run_dir(task, train_cfg, root=out)
    params, accuracy = training_run.train(task, model_cfg, train_cfg, run_dir,
                                          log=lambda line: None, progress=True)
    log(f"seed {seed}: iid accuracy {accuracy:.4f} ({run_dir}; "
        f"{time.perf_counter() - clock:.0f} s so far)")
    fitted = {}  # spec -> proxy: the last layer's k-means fits serve the mechanism too

    def fit(spec):
      if spec not in fitted:
        fitted[spec] = api.Run(task, model_cfg, params).fit_spec(spec, n_fit=n_fit).proxy
      return fitted[spec]

    model_rows += [dict(r, model_seed=seed)
                   for r in model_accuracies(task, model_cfg, params, run_dir, plan)]
    for spec in specs(plan, transformer.TransformerSites(model_cfg)):
      r, g = evaluate_cached(task, model_cfg, params, spec, run_dir, plan, n_fit, log, fit)
      rows += [dict(row, model_seed=seed) for row in r]
      group_rows += [dict(row, model_seed=seed) for row in g]
      if (plan.fit_split and proxies.KINDS[spec.kind].fits_on == "activations"
          and spec.layer == model_cfg.n_layers - 1):
        n_there = evaluation.fit_strings(task, n_fit, plan.fit_split)
        r, _ = evaluate_cached(task, model_cfg, params, spec, run_dir, plan, n_there, log,
                               fit, fit_split=plan.fit_split)
        fit_rows += [dict(row, model_seed=seed) for row in r]
    found = mechanism_cached(task, model_cfg, params, run_dir, plan, n_fit, log, fit)
    mechanisms.append(dict(found, model_seed=seed))

  path = os.path.join(out, "report.md")
  if not mesh.is_main():
    return path
  rundir.write_csv(os.path.join(out, "rows.csv"), rows)
  rundir.write_csv(os.path.join(out, "by_group.csv"), group_rows)
  rundir.write_csv(os.path.join(out, "model_accuracy.csv"), model_rows)
  # by_group.csv is large (every bucket of every group); what the depth and margin
  # sections read from it is small, and written beside it in full.
  rundir.write_json(os.path.join(out, "depth_controls.json"),
                    depth_controls.summary(group_rows, plan.splits or task.splits,
                                           data_cfg.max_depth))
  if fit_rows:
    rundir.write_csv(os.path.join(out, "fit_split_rows.csv"), fit_rows)
  layers = list(range(model_cfg.n_layers))
  splits = plan.splits or task.splits
  written = figures.all_figures(rows, group_rows, layers, splits, data_cfg.max_depth,
                                os.path.join(out, "figures"))
  setup = [f"Setting `{setting}`: Dyck-({data_cfg.n_types}, {data_cfg.max_depth}), "
           f"{data_cfg.n_train} training strings, {data_cfg.n_test} strings per test split; "
           f"model {model_cfg.n_layers} layers x {model_cfg.n_heads} head, d_model "
           f"{model_cfg.d_model}; {plan.train.steps} training steps; seeds "
           f"{', '.join(map(str, plan.seeds))}; proxies fitted on {n_fit} training strings.",
           f"Made by `python -m experiments.reproduce --setting={setting}` in "
           f"{time.perf_counter() - clock:.0f} s (this invocation; resumed work not counted)."]
  report.write(path, title="Dyck: interpretability illusions, reproduced",
               setup=setup, rows=rows, group_rows=group_rows, splits=splits, layers=layers,
               train_depth=data_cfg.max_depth, figures=written, mechanisms=mechanisms,
               model_rows=model_rows, fit_rows=fit_rows)
  log(f"wrote {path}, {len(written)} figures, rows.csv and by_group.csv "
      f"in {time.perf_counter() - clock:.0f} s")
  return path


def main(argv: Sequence[str]) -> None:
  args = parse(argv)
  mesh.initialize()  # every worker of a TPU pod slice runs this same command
  log = (lambda line: print(line, flush=True)) if mesh.is_main() else (lambda line: None)
  cli.check_choice("setting", args.setting, PLANS)
  plan = PLANS[args.setting]
  if args.seeds:
    for seed in args.seeds:
      cli.check_range("seed", seed, 0, 2**32 - 1)
    plan = dataclasses.replace(plan, seeds=tuple(dict.fromkeys(args.seeds)))
  depths = list(dict.fromkeys(args.depths or [plan.data.max_depth]))
  plans = {}
  for depth in depths:
    try:
      plans[depth] = dataclasses.replace(plan, data=dataclasses.replace(plan.data, max_depth=depth))
    except ValueError as e:
      raise cli.UsageError(f"depth {depth}: {e}") from None
  out = args.out or os.path.join(rundir.RUNS_ROOT, f"reproduce-{args.setting}")
  cli.ensure_writable(out)
  cli.ensure_writable(args.data_dir)
  for depth, depth_plan in plans.items():
    # One depth writes straight into `out`; a sweep over depths, one folder per depth.
    depth_out = out if args.depths is None else os.path.join(out, f"m{depth}")
    reproduce_one_depth(args.setting, depth_plan, args.data_dir, depth_out, log)

if __name__ == "__main__":
  cli.run_main(main, bad_input=(checkpoints.CheckpointError,),
               failures=(training.TrainingError, training.Preempted))
