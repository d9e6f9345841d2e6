"""Fit a proxy of one attention head and measure how faithful it is on every split.

  python evaluate.py --proxy=svd --rank=4
  python evaluate.py --proxy=svd --rank=1,2,4,8,16 --layer=0 --out=svd.json
  python evaluate.py --proxy=kmeans --k=2,4,8,16,32
  python evaluate.py --proxy=onehot
  python evaluate.py --proxy=weight_svd --rank=4
  python evaluate.py --task=code --proxy=svd --rank=4 --layer=1 --head=3
  python evaluate.py --proxy=kmeans --k=8 --fit_split=val_depth   # fitted out of distribution

Uses the latest run under runs/ (or --run=DIR). The whole sweep (every rank or K) and the
model run in one compiled program. The table is printed and written to <run>/eval/ as JSON
and CSV, with 95 % bootstrap intervals over strings; metrics per depth and per distance
bucket go beside it (<name>_by_group.json/.csv).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

import proxies
from experiments import cli
from pipeline import api, evaluation, rundir, tasks
from models import checkpoints, mesh, training, transformer
from models.sites import SiteModel

# Flags with a meaning for every kind, though some kind also takes them as an option.
GENERAL_FLAGS = ("seed",)  # seeds the bootstrap too

COLUMNS = ("accuracy_model", "bits_model", "accuracy_proxy",
           "agreement", "agreement_95ci", "attention_jsd", "tv", "kl", "shared_errors", "n",
           # the same on a task's strata (`Task.strata`; Dyck: closes deeper than trained on)
           "accuracy_model_deep", "accuracy_proxy_deep", "agreement_deep", "n_deep")


def parse(argv: Sequence[str]) -> argparse.Namespace:
  parser = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", default=None, help="run directory (default: the latest under runs/)")
  parser.add_argument("--task", default=None,
                      help=f"with no --run, the latest run of this task ({', '.join(tasks.TASKS)}); "
                      "with --run, checked against it")
  parser.add_argument("--proxy", default="svd", help=f"one of: {', '.join(proxies.KINDS)}")
  add_kind_flags(parser)
  parser.add_argument("--layer", default="-1",
                      help="block(s) of the heads: 1, 0,1 or all; negative counts from the "
                      "last (default: -1, the last)")
  parser.add_argument("--head", default="0",
                      help="head(s) within each block: 0, 0,2 or all (default: 0); every "
                      "listed head of every listed block is simplified at once, one fit each")
  parser.add_argument("--sites", default=None,
                      help="comma-separated sites to simplify (default: the kind's; svd and "
                      "kmeans: q,k, or any of q,k,v,resid_pre; onehot: pattern; weight_svd: q)")
  parser.add_argument("--seed", type=int, default=0,
                      help="seeds the bootstrap, and the kinds that take a seed "
                      f"({', '.join(k.name for k in proxies.KINDS.values() if 'seed' in k.options)})"
                      " (default: 0)")
  parser.add_argument("--n_bootstrap", type=int, default=1000,
                      help="bootstrap resamples of the strings for the intervals (default: 1000)")
  parser.add_argument("--n_fit", type=int, default=None,
                      help="training strings to fit on (default: 1000, or all if fewer)")
  parser.add_argument("--fit_split", default=None,
                      help="fit on the first --n_fit strings of this split instead (a test or "
                      "validation split: the fitting-distribution control)")
  parser.add_argument("--scoring", default=None,
                      help=f"which positions are scored: {tasks.help_for('scoring')}")
  parser.add_argument("--splits", default=None,
                      help="comma-separated splits (default: all test splits of the task)")
  parser.add_argument("--split_file", action="append", default=[], metavar="NAME=PATH",
                      help="also evaluate the strings of a text file as split NAME, in the "
                      f"run's task's format ({tasks.help_for('split_file')}); repeatable")
  parser.add_argument("--batch_size", type=int, default=256, help="sequences per batch")
  parser.add_argument("--out", default=None, help="also write the table to this JSON file")
  return parser.parse_args(argv)


def add_kind_flags(parser: argparse.ArgumentParser) -> None:
  """A flag for every registered kind's sweep (--rank, --k: a list of values, one compiled
  sweep) and option (--centered, --separate, ...), read off the registry. Each defaults to
  None, "not given", so that `check` can reject it for a kind it does not apply to."""
  users: dict[str, list[proxies.ProxyKind]] = {}
  for kind in proxies.KINDS.values():
    for name in ([kind.sweep] if kind.sweep else []) + list(kind.options):
      if name not in GENERAL_FLAGS:
        users.setdefault(name, []).append(kind)
  for name, kinds in users.items():
    text = "; ".join(dict.fromkeys(k.help[name] for k in kinds if name in k.help))
    who = ", ".join(k.name for k in kinds)
    if any(k.sweep == name for k in kinds):
      defaults = ", ".join(f"{k.name} {','.join(map(str, k.sweep_default))}" for k in kinds
                           if k.sweep_default)
      parser.add_argument(f"--{name}", type=cli.int_list, default=None,
                          help=f"{who}: {text} (one compiled sweep; default: {defaults})")
    elif isinstance(kinds[0].options[name], bool):
      parser.add_argument(f"--{name}", action="store_true", default=None, help=f"{who}: {text}")
    else:
      kind_type = type(kinds[0].options[name])
      parser.add_argument(f"--{name}", type=kind_type, default=None,
                          help=f"{who}: {text} (default: {kinds[0].options[name]})")


def kind_flags() -> dict[str, Callable[[proxies.ProxyKind], bool]]:
  """Every flag that applies to some proxy kinds only, with the test of whether it applies
  to a kind; read off the registry (its sweep, its options, what it fits on), so that a
  new kind or option needs no list kept here."""
  flags = {sweep: (lambda kind, sweep=sweep: kind.sweep == sweep)
           for sweep in dict.fromkeys(k.sweep for k in proxies.KINDS.values() if k.sweep)}
  for option in dict.fromkeys(o for k in proxies.KINDS.values() for o in k.options):
    if option not in GENERAL_FLAGS:
      flags[option] = lambda kind, option=option: option in kind.options
  flags["n_fit"] = flags["fit_split"] = lambda kind: kind.fits_on == "activations"
  return flags


def check(args: argparse.Namespace, model: SiteModel, task) -> evaluation.EvalConfig:
  """Validates everything that depends on the run (`api.plan`: the kind's own limits, the
  settings against the task) before anything runs; returns what to evaluate (the parsed
  flags are left as they were given)."""
  kind = proxies.KINDS[args.proxy]
  for flag, applies in kind_flags().items():
    given = getattr(args, flag)
    if given is not None and given is not False and not applies(kind):
      users = [k.name for k in proxies.KINDS.values() if applies(k)]
      raise cli.UsageError(f"--{flag} does not apply to {args.proxy}; it applies to: "
                           f"{', '.join(users)}")
  values = getattr(args, kind.sweep) if kind.sweep else None
  layers = index_list("layer", args.layer, model.n_layers)
  heads = index_list("head", args.head, model.n_heads)
  options = {name: args.seed if name == "seed" else getattr(args, name)
             for name in kind.options}
  return api.plan(task, model, args.proxy, values or (),
                  heads=[(l, h) for l in layers for h in heads],
                  sites=args.sites.split(",") if args.sites else None,
                  options={k: v for k, v in options.items() if v is not None},
                  splits=args.splits.split(",") if args.splits is not None else None,
                  scoring=args.scoring, n_fit=args.n_fit, fit_split=args.fit_split,
                  batch_size=args.batch_size, seed=args.seed, n_bootstrap=args.n_bootstrap)


def index_list(name: str, text: str, count: int) -> list[int]:
  """'all', '1' or '0,1' -> indices into 0..count-1 (negative ones count from the end)."""
  if text == "all":
    return list(range(count))
  try:
    values = cli.int_list(text)
  except argparse.ArgumentTypeError as e:
    raise cli.UsageError(f"--{name}: {e}, or 'all'") from None
  out = []
  for v in values:
    v = v % count if -count <= v < 0 else v
    cli.check_range(name, v, 0, count - 1, " for this model")
    out.append(v)
  return list(dict.fromkeys(out))


def interval(row: dict, metric: str) -> str | None:
  """The bootstrap interval of `metric` as one short cell, '[0.690, 0.714]' (three digits:
  1,000 resamples do not place a percentile more finely); None where there is none."""
  lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
  return None if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"


def format_table(rows: list[dict]) -> str:
  """The printed table: the split, the kind and its sweep's value, COLUMNS and the kind's
  diagnostics present in any row, with the agreement's 95 % interval beside it (the files
  hold every interval as <metric>_lo/_hi)."""
  rows = [{**r, "agreement_95ci": interval(r, "agreement")} if "agreement" in r else r
          for r in rows]
  kinds = [proxies.KINDS[k] for k in dict.fromkeys(r["proxy"] for r in rows)]
  own = [c for k in kinds for c in ([k.sweep] if k.sweep else [])]
  diagnostics = [c for k in kinds for c in k.diagnostics]
  columns = [c for c in ("split", "proxy", *dict.fromkeys(own), *COLUMNS,
                         *dict.fromkeys(diagnostics)) if any(c in r for r in rows)]
  cell = lambda v: f"{v:.4f}" if isinstance(v, float) else "-" if v is None else str(v)
  widths = {c: max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns}
  lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
  lines += ["  ".join(cell(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
  return "\n".join(line.rstrip() for line in lines)


def main(argv: Sequence[str]) -> None:
  args = parse(argv)
  mesh.initialize()  # a multi-process job, if the environment describes one
  say = print if mesh.is_main() else (lambda *a, **k: None)
  cli.check_choice("proxy", args.proxy, list(proxies.KINDS))
  if args.task is not None:
    cli.check_choice("task", args.task, list(tasks.TASKS))
  run_dir = args.run or rundir.latest_run(task=args.task)
  config = rundir.read_config(run_dir)
  if args.task is not None and config.get("task") != args.task:
    raise cli.UsageError(f"run {run_dir!r} is a {config.get('task')} run, not {args.task}")
  task, model_cfg, train_cfg = tasks.from_run_config(config, run_dir)
  for entry in args.split_file:
    name, sep, path = entry.partition("=")
    if not sep:
      raise cli.UsageError(f"--split_file={entry}: expected NAME=PATH")
    task.add_split_file(name, path)
  model = transformer.TransformerSites(model_cfg)
  config = check(args, model, task)
  spec = config.spec
  eval_dir = os.path.join(run_dir, "eval")
  cli.ensure_writable(eval_dir)
  if args.out:
    cli.ensure_writable(os.path.dirname(os.path.abspath(args.out)))

  params = training.restore_params(run_dir, model_cfg, train_cfg)
  if params is None:
    raise cli.UsageError(f"run {run_dir!r} has no checkpoint; train it first")
  fitted_on = {"activations": f"fitted on {config.n_fit} {config.fit_split or 'training'} "
                              "strings",
               "weights": "fitted on the head's weights", "nothing": "nothing to fit"}
  where = ", ".join(f"layer {l} head {h}" for l, h in spec.heads)
  say(f"run {run_dir}: {args.proxy} on {where} ({'+'.join(spec.sites)}"
      f"{', each head fitted on its own' if len(spec.heads) > 1 else ''}), "
      f"{fitted_on[proxies.KINDS[args.proxy].fits_on]}")
  result = api.Run(task, model, params).run(config)
  say(format_table(result.rows))
  say(f"faithfulness program: {result.compilations} compilation(s) for {result.settings} "
      f"proxy setting(s) x {len(config.splits)} split(s) ({result.shapes} batch shape(s): length "
      f"buckets x read-out slots)")

  if not mesh.is_main():
    return  # files are written once, by process 0
  stem = evaluation.file_stem(spec, config.fit_split)
  paths = evaluation.write(result, eval_dir, stem)
  if args.out:
    rundir.write_json(args.out, result.rows)
  print(f"wrote {paths[0]} (and .csv, {stem}_by_group.json/.csv)"
        + (f" and {args.out}" if args.out else ""))


if __name__ == "__main__":
  cli.run_main(main, bad_input=(checkpoints.CheckpointError,))
