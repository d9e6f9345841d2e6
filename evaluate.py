"""Fit a proxy of one attention head and measure how faithful it is on every split.

  python evaluate.py --proxy=svd --rank=4
  python evaluate.py --proxy=svd --rank=1,2,4,8,16 --layer=0 --out=svd.json

Uses the latest run under runs/ (or --run=DIR). The whole sweep (every rank) and the model
run in one compiled program; the table is printed and written to <run>/eval/ as JSON and CSV.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import jax

import proxies
from data import dyck, dyck_batch
from experiments import cli, rundir, tasks
from models import checkpoints, training, transformer
from proxies import faithfulness

COLUMNS = ("split", "proxy", "rank", "accuracy_model", "accuracy_proxy", "agreement",
           "attention_jsd", "tv", "kl", "n")


def parse(argv: Sequence[str]) -> argparse.Namespace:
  parser = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", default=None, help="run directory (default: the latest under runs/)")
  parser.add_argument("--proxy", default="svd", help=f"one of: {', '.join(proxies.KINDS)}")
  parser.add_argument("--rank", type=cli.int_list, default=[4],
                      help="rank(s) to keep, e.g. 4 or 1,2,4,8 (one compiled sweep)")
  parser.add_argument("--layer", type=int, default=-1, help="block of the head (default: last)")
  parser.add_argument("--head", type=int, default=0, help="head within the block (default: 0)")
  parser.add_argument("--sites", default=None,
                      help="comma-separated sites to simplify (default: the kind's, q,k for svd)")
  parser.add_argument("--centered", action="store_true", help="svd: subtract the mean (PCA)")
  parser.add_argument("--separate", action="store_true",
                      help="svd: separate bases for each site instead of one joint basis")
  parser.add_argument("--n_fit", type=int, default=None,
                      help="training strings to fit on (default: 1000, or all if fewer)")
  parser.add_argument("--scoring", default="murty", help=f"one of: {', '.join(dyck_batch.SCORINGS)}")
  parser.add_argument("--splits", default=",".join(dyck.TEST_SPLITS),
                      help="comma-separated splits (default: all test splits)")
  parser.add_argument("--batch_size", type=int, default=256, help="sequences per batch")
  parser.add_argument("--out", default=None, help="also write the table to this JSON file")
  return parser.parse_args(argv)


def check(args: argparse.Namespace, model_cfg: transformer.ModelConfig, n_train: int):
  """Validates everything that depends on the run; returns the ProxySpec."""
  kind = proxies.KINDS[args.proxy]
  layer = args.layer % model_cfg.n_layers if -model_cfg.n_layers <= args.layer < 0 else args.layer
  cli.check_range("layer", layer, 0, model_cfg.n_layers - 1, " for this model")
  cli.check_range("head", args.head, 0, model_cfg.n_heads - 1, " for this model")
  sites = tuple(args.sites.split(",")) if args.sites else kind.sites
  for site in sites:
    cli.check_choice("site", site, kind.allowed_sites)
  width = model_cfg.d_model if "resid_pre" in sites else model_cfg.d_head
  for rank in args.rank:
    cli.check_range("rank", rank, 1, width, f" (the simplified vectors have {width} dimensions)")
  if args.n_fit is None:
    args.n_fit = min(1000, n_train)
  cli.check_range("n_fit", args.n_fit, 1, n_train, " (the training split's size)")
  cli.check_range("batch_size", args.batch_size, 1, 1 << 16)
  cli.check_choice("scoring", args.scoring, dyck_batch.SCORINGS)
  for split in args.splits.split(","):
    cli.check_choice("split", split, dyck.TEST_SPLITS)
  options = tuple((name, getattr(args, name)) for name in kind.options)
  values = tuple(args.rank) if kind.sweep == "rank" else ()
  return proxies.ProxySpec(args.proxy, layer, args.head, sites, values, options)


def format_table(rows: list[dict]) -> str:
  columns = [c for c in COLUMNS if any(c in r for r in rows)]
  cell = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)
  widths = {c: max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns}
  lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
  lines += ["  ".join(cell(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
  return "\n".join(lines)


class CompileCounter:
  """Counts XLA compilations while active (jax.monitoring's backend-compile event)."""

  def __init__(self):
    self.count, self.active = 0, False
    jax.monitoring.register_event_duration_secs_listener(self._on_event)

  def _on_event(self, event: str, duration: float, **kwargs) -> None:
    if self.active and event == "/jax/core/compile/backend_compile_duration":
      self.count += 1


def main(argv: Sequence[str]) -> None:
  args = parse(argv)
  cli.check_choice("proxy", args.proxy, list(proxies.KINDS))
  run_dir = args.run or rundir.latest_run()
  task, model_cfg, train_cfg = tasks.from_run_config(rundir.read_config(run_dir), run_dir)
  spec = check(args, model_cfg, task.config.n_train)
  eval_dir = os.path.join(run_dir, "eval")
  cli.ensure_writable(eval_dir)
  if args.out:
    cli.ensure_writable(os.path.dirname(os.path.abspath(args.out)))

  params = training.restore_params(run_dir, model_cfg, train_cfg)
  if params is None:
    raise cli.UsageError(f"run {run_dir!r} has no checkpoint; train it first")
  activations = faithfulness.collect_activations(
      model_cfg, params, task.fit_inputs(args.n_fit), task.pad_id, spec.layer, spec.head,
      spec.sites)
  proxy = proxies.fit(spec, activations)
  print(f"run {run_dir}: {args.proxy} on layer {spec.layer} head {spec.head} "
        f"({'+'.join(spec.sites)}), fitted on {args.n_fit} training strings")

  program = faithfulness.FaithfulnessProgram(model_cfg, task.decision(args.scoring), task.pad_id)
  counter = CompileCounter()
  rows = []
  for split in args.splits.split(","):
    arrays = task.eval_arrays(split, args.scoring)
    counter.active = True
    result = faithfulness.evaluate(program, params, proxy, arrays, args.batch_size, task.pad_id)
    counter.active = False
    for label, summary in zip(spec.labels(), result.summary()):
      rows.append({"split": split, **label, **summary, "scoring": args.scoring})
  print(format_table(rows))
  print(f"faithfulness program: {counter.count} compilation(s) for {proxy.size} proxy "
        f"setting(s) x {len(args.splits.split(','))} split(s)")

  name = "_".join([args.proxy, f"layer{spec.layer}", f"head{spec.head}", "+".join(spec.sites),
                   "-".join(str(v) for v in spec.values)]
                  + [option for option, on in spec.options if on])
  rundir.write_json(os.path.join(eval_dir, f"{name}.json"), rows)
  rundir.write_csv(os.path.join(eval_dir, f"{name}.csv"), rows)
  if args.out:
    rundir.write_json(args.out, rows)
  print(f"wrote {eval_dir}/{name}.json and .csv" + (f" and {args.out}" if args.out else ""))


if __name__ == "__main__":
  cli.run_main(main, bad_input=(checkpoints.CheckpointError,))
