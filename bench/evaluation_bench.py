"""Evaluation parts of the Dyck benchmarks (`dyck_bench.py` says what each measures): peak
memory at 1x and 10x the strings, the sae's fit time, and the scan in one process against
one evaluate.py process per unit."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import jax
import numpy as np

import proxies
from experiments import scan as scan_command
from models import transformer
from pipeline import api, scan
from proxies import faithfulness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The command whose parts these are: the memory part's children run through it.
COMMAND = os.path.join(ROOT, "bench", "dyck_bench.py")


def memory_child(task, copies: int, ranks, batch_size: int) -> None:
  """Runs in a fresh process: evaluate `copies` x 500 iid strings, print peak RSS (MiB)."""
  model_cfg = task.model_config()
  params = transformer.init_params(model_cfg, 0)
  sweep = api.Run(task, model_cfg, params).fit("svd", ranks, heads=[(1, 0)], n_fit=200).proxy
  program = faithfulness.FaithfulnessProgram(model_cfg, task.decision(), task.pad_id)
  base = {k: v[:500] for k, v in task.eval_arrays("iid").items()}
  arrays = {k: np.concatenate([v] * copies) for k, v in base.items()}
  faithfulness.evaluate(program, params, sweep, arrays, batch_size, task.pad_id)
  print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def memory_ratio(data_dir: str, ranks, batch_size: int) -> None:
  peaks = {}
  for copies in (1, 10):
    out = subprocess.run([sys.executable, COMMAND, "--part=memory_child",
                          f"--copies={copies}", f"--data_dir={data_dir}",
                          f"--ranks={','.join(map(str, ranks))}", f"--batch_size={batch_size}"],
                         capture_output=True, text=True, check=True)
    peaks[copies] = float(out.stdout.strip().splitlines()[-1])
  print(f"memory: peak RSS evaluating {len(ranks)} ranks on 500 strings {peaks[1]:.0f} MiB, "
        f"on 5,000 strings {peaks[10]:.0f} MiB, ratio {peaks[10] / peaks[1]:.3f}x "
        f"(batches of {batch_size})")


def sae_fit_time(task, model_cfg, params, **options) -> float:
  kind = proxies.KINDS["sae"]
  start = time.perf_counter()
  # The API's default fit: 1000 training strings (all, if fewer), the kind's sweep.
  jax.block_until_ready(api.Run(task, model_cfg, params).fit("sae", **options).proxy)
  seconds = time.perf_counter() - start
  print(f"sae: default sweep k={','.join(map(str, kind.sweep_default))} fitted in "
        f"{seconds:.1f} s ({jax.devices()[0].device_kind})")
  return seconds


def scan_ratio(run_dir: str, families: str, heads: str, splits: str, draws: int) -> None:
  config = scan.ScanConfig(heads=scan_command.heads_list(heads),
                           families=tuple(f for f in families.split(",") if f),
                           splits=tuple(s for s in splits.split(",") if s), draws=draws)
  run = api.load_run(run_dir)
  units = scan.plan(run.task, run.model, config)
  start = time.perf_counter()
  run.scan(config, log=lambda m: None)
  one = time.perf_counter() - start
  evaluate_py = os.path.join(ROOT, "evaluate.py")
  start = time.perf_counter()
  for unit in units:
    spec, kind = unit.spec, proxies.KINDS[unit.spec.kind]
    (layer, head), = spec.heads
    flags = [f"--run={run_dir}", f"--proxy={spec.kind}", f"--layer={layer}", f"--head={head}",
             f"--splits={','.join(config.splits)}" if config.splits else None,
             f"--{kind.sweep}={','.join(map(str, spec.values))}" if kind.sweep else None,
             f"--seed={dict(spec.options)['seed']}" if "seed" in kind.options else None,
             f"--fit_split={unit.fit_split}" if unit.fit_split else None]
    done = subprocess.run([sys.executable, evaluate_py, *filter(None, flags)],
                          capture_output=True, text=True)
    if done.returncode:
      sys.exit(f"evaluate.py failed on {unit.stem}: {done.stderr.strip()}")
  processes = time.perf_counter() - start
  print(f"scan: {len(units)} evaluations ({', '.join(config.families or scan.families())}; "
        f"controls included) in one process {one:.1f} s; as {len(units)} evaluate.py "
        f"processes {processes:.1f} s; ratio {processes / one:.2f}x "
        f"({jax.devices()[0].device_kind})")
