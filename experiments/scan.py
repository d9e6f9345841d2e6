"""The illusion scan of a trained run: which simplified explanations of the model mislead
out of distribution, and where.

  python -m experiments.scan                                 # the latest run under runs/
  python -m experiments.scan --run=runs/dyck-k20-m10-s0 --heads=1.0 --families=svd,onehot

Every proxy family (every registered kind that is no control) at its scan sweep, on every
head (or --heads), on every test split of the task, beside its controls: a chance baseline
of the same size (--draws seeds) and the family fitted on another split where the task
has one (`pipeline.scan` says what each is and how the areas, gaps and flags are read).
Writes <run>/scan/ (or --out): report.md, report.json, figures/ and units/ (one file per
evaluation, read back when the scan is run again with the same settings).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import jax

from experiments import cli, scan_report
from pipeline import api, rundir, scan


def heads_list(text: str) -> tuple[tuple[int, int], ...]:
  """'all' -> () (every head); '1.0,1.3' -> ((1, 0), (1, 3)): layer.head."""
  if text == "all":
    return ()
  out = []
  for entry in text.split(","):
    layer, dot, head = entry.partition(".")
    if not dot or not layer.isdigit() or not head.isdigit():
      raise cli.UsageError(f"--heads={text}: expected 'all' or LAYER.HEAD[,LAYER.HEAD...]")
    out.append((int(layer), int(head)))
  return tuple(out)


def parse(argv: Sequence[str]) -> argparse.Namespace:
  defaults = scan.ScanConfig()
  parser = cli.Parser(prog="python -m experiments.scan", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", default=None, help="a run directory (default: the latest)")
  parser.add_argument("--out", default=None, help="where to write (default: <run>/scan)")
  parser.add_argument("--heads", default="all", help="'all' or LAYER.HEAD,... (default: all)")
  parser.add_argument("--families", default="", help="comma-separated kinds (default: all)")
  parser.add_argument("--splits", default="", help="comma-separated (default: every test split)")
  parser.add_argument("--faithful", type=float, default=defaults.faithful,
                      help="agreement a setting must hold in distribution to be flagged "
                      f"where it fails (default: {defaults.faithful})")
  parser.add_argument("--draws", type=int, default=defaults.draws,
                      help=f"seeds of each chance control (default: {defaults.draws})")
  parser.add_argument("--no_controls", action="store_true", help="the families alone")
  parser.add_argument("--n_fit", type=int, default=None,
                      help="strings to fit on (default: 1000, or all if fewer)")
  parser.add_argument("--batch_size", type=int, default=defaults.batch_size)
  parser.add_argument("--n_bootstrap", type=int, default=defaults.n_bootstrap)
  parser.add_argument("--seed", type=int, default=defaults.seed, help="seeds the bootstrap")
  return parser.parse_args(argv)


def measured_on(units: Sequence[dict]) -> str:
  """Where and how long the units were measured: '<device>: N evaluations, S s; ...'
  (a resumed scan can hold units measured on another machine)."""
  seconds: dict[str, list[float]] = {}
  for u in units:
    seconds.setdefault(u.get("device", "an unrecorded device"), []).append(u.get("seconds", 0.0))
  return "; ".join(f"{d}: {len(s)} evaluation(s), {sum(s):.0f} s" for d, s in seconds.items())


def main(argv: Sequence[str]) -> None:
  args = parse(argv)
  config = scan.ScanConfig(
      heads=heads_list(args.heads),
      families=tuple(f for f in args.families.split(",") if f),
      splits=tuple(s for s in args.splits.split(",") if s), faithful=args.faithful,
      draws=args.draws, controls=not args.no_controls, n_fit=args.n_fit,
      batch_size=args.batch_size, n_bootstrap=args.n_bootstrap, seed=args.seed)
  run_dir = args.run or rundir.latest_run()
  out = args.out or os.path.join(run_dir, "scan")
  run = api.load_run(run_dir)
  units = scan.plan(run.task, run.model, config)  # every spec checked before anything runs
  cli.ensure_writable(out)
  print(f"scanning {run_dir}: {len(units)} evaluations ({len(config.families or scan.families())} "
        f"families and their controls) into {out}", flush=True)
  start = time.perf_counter()
  result = run.scan(config, out_dir=out, log=lambda m: print(m, flush=True))
  seconds = time.perf_counter() - start
  command = " ".join(["python -m experiments.scan", *argv])
  setup = [f"Made by `{command}` on run `{run_dir}` ({run.task.name} task), "
           f"{len(result.units)} evaluations, measured on {measured_on(result.units)}; "
           f"this invocation {seconds:.0f} s on {jax.devices()[0].device_kind}, units read "
           "back included.",
           f"Settings: {', '.join(f'{k}={v}' for k, v in scan._settings_key(config).items())}"
           f"; chance draws {config.draws}."]
  paths = scan_report.write(result, out, title="Illusion scan", setup=setup)
  flagged = len(result.flags())
  print(f"{flagged} flagged setting(s); wrote {', '.join(paths)} in {seconds:.0f} s")


if __name__ == "__main__":
  cli.run_main(main)
