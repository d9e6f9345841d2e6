"""How far past its training depth a Dyck model generalizes, run by run.

  python -m experiments.depth_generalization --runs=runs/dyck-k20-m10-s0,runs/long-s0

For each trained run: its training recipe (steps, batch, learning rate), the model's
accuracy on iid closes at key depth <= m-1 (the depths training scores) and on
`unseen_depth` closes at key depth m+1..m+3, m+4..cap and m+1..m+5 (the paper's "deeper
than ten"), one number per key depth, and the deep accuracy its training log recorded at
each evaluation (`deep_accuracy`: does it keep rising with more steps?). Writes
<run>/eval/depth_generalization.json per run and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence


from experiments import cli
from pipeline import rundir, tasks


def accuracy_by_key_depth(task: tasks.DyckTask, model_cfg, params) -> dict:
  """{'iid <= m-1': acc, 'unseen_depth <lo>-<hi>': acc, ..., 'by_depth': {d: [acc, n]}}."""
  accuracy = tasks.model_accuracy(model_cfg, task.decision(), task.pad_id)
  m = task.config.max_depth
  deep = task.eval_arrays("unseen_depth")
  deepest = int(deep["depth"][deep["scored"]].max())

  def on(arrays, keep):
    selected = dict(arrays, scored=arrays["scored"] & keep(arrays["depth"]))
    n = int(selected["scored"].sum())
    return (accuracy(params, selected) if n else None), n

  out = {"m": m}
  out["iid <= m-1"], out["n iid <= m-1"] = on(task.eval_arrays("iid"), lambda d: d < m)
  for lo, hi in ((m + 1, m + 3), (m + 4, deepest), (m + 1, m + 5)):
    out[f"unseen_depth {lo}-{hi}"], out[f"n {lo}-{hi}"] = on(
        deep, lambda d, lo=lo, hi=hi: (d >= lo) & (d <= hi))
  out["by_depth"] = {d: list(on(deep, lambda x, d=d: x == d)) for d in range(1, deepest + 1)}
  return out


def training_curve(run_dir: str) -> list[tuple[int, float, float]]:
  """(step, iid_accuracy, deep_accuracy) at each evaluation the training log holds."""
  path = os.path.join(run_dir, "metrics.jsonl")
  rows = [json.loads(line) for line in open(path, encoding="utf-8")] if os.path.exists(path) else []
  return [(r["step"], r["iid_accuracy"], r["deep_accuracy"]) for r in rows
          if "deep_accuracy" in r]


def measure(run_dir: str) -> dict:
  task, model_cfg, params = tasks.load_trained(run_dir)
  if task.name != "dyck":
    raise cli.UsageError(f"run {run_dir!r} is a {task.name} run; this measures Dyck runs")
  train = rundir.read_config(run_dir)["train"]
  return {"run": run_dir, "steps": train["steps"], "batch_size": train["batch_size"],
          "learning_rate": train["learning_rate"], "seed": train["seed"],
          **accuracy_by_key_depth(task, model_cfg, params), "curve": training_curve(run_dir)}


def table(results: Sequence[dict]) -> list[str]:
  keys = [k for k in results[0] if k.startswith(("iid <=", "unseen_depth"))]
  cell = lambda v: "-" if v is None else f"{v:.3f}"
  lines = ["run  steps  batch  lr  " + "  ".join(keys)]
  for r in results:
    lines.append(f"{r['run']}  {r['steps']}  {r['batch_size']}  {r['learning_rate']:g}  "
                 + "  ".join(cell(r[k]) for k in keys))
  for r in results:
    depths = "  ".join(f"{d}: {cell(a)}" for d, (a, n) in r["by_depth"].items()
                       if int(d) > r["m"])
    lines.append(f"{r['run']} by key depth past m: {depths}")
    curve = "  ".join(f"{s}: {deep:.3f}" for s, _, deep in r["curve"])
    lines.append(f"{r['run']} deep_accuracy while training: {curve or '-'}")
  return lines


def main(argv: Sequence[str]) -> None:
  parser = cli.Parser(prog="python -m experiments.depth_generalization", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--runs", required=True, help="comma-separated Dyck run directories")
  args = parser.parse_args(argv)
  results = []
  for run_dir in args.runs.split(","):
    result = measure(run_dir)
    rundir.write_json(os.path.join(run_dir, "eval", "depth_generalization.json"),
                      json.loads(json.dumps(result, default=float)))
    results.append(result)
  print("\n".join(table(results)))


if __name__ == "__main__":
  cli.run_main(main)
