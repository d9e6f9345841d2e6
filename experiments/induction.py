"""Which heads are induction-like: attention from a repeated token to the token that followed
its previous occurrence, on sequences of random tokens repeated twice.

  python -m experiments.induction --run=runs/code-python-s0

On [r_1 .. r_T, r_1 .. r_T], an induction head at query position T + i (reading r_{i+1})
attends to key i + 1 (the token after r_{i+1}'s first occurrence, which it will copy). The
score of a head is its mean attention weight on that key over the second half: 1 for a
perfect induction head, `uniform_baseline` (about 1.4 / L) for one attending uniformly to
every earlier position. Written to
<run>/eval/induction.json, one row per layer and head.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import jax
import numpy as np

from experiments import cli, rundir, tasks
from models import checkpoints, mesh, training, transformer


def score_from_patterns(pattern_BxHxLxL: np.ndarray, half: int) -> np.ndarray:
  """[H]: mean attention from query T + i to key i + 1, for i in 0..T-2, over the batch."""
  queries = np.arange(half, 2 * half - 1)
  keys = queries - half + 1
  return np.asarray(pattern_BxHxLxL)[:, :, queries, keys].mean(axis=(0, 2))


def uniform_baseline(seq_len: int) -> float:
  """The score of a head that attends uniformly over every causal key."""
  half = seq_len // 2
  return float(np.mean(1.0 / (np.arange(half, 2 * half - 1) + 1)))


def induction_scores(cfg: transformer.ModelConfig, params, n_tokens: int, n: int = 64,
                     seed: int = 0) -> np.ndarray:
  """[n_layers, n_heads] scores on `n` random sequences of ids 0..n_tokens-1 repeated."""
  half = cfg.seq_len // 2
  rng = np.random.default_rng(seed)
  first = rng.integers(0, n_tokens, (n, half))
  tokens = np.concatenate([first, first], axis=1).astype(np.int32)
  capture = jax.jit(lambda p, x, layer: transformer.capture(cfg, p, x, layer, "pattern"),
                    static_argnums=2)
  return np.stack([score_from_patterns(mesh.to_host(capture(params, tokens, layer)), half)
                   for layer in range(cfg.n_layers)])


def main(argv: Sequence[str]) -> None:
  parser = cli.Parser(prog="python -m experiments.induction", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", default=None, help="run directory (default: the latest)")
  parser.add_argument("--n", type=int, default=64, help="random sequences (default: 64)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  cli.check_range("n", args.n, 1, 10_000)
  cli.check_range("seed", args.seed, 0, 2**32 - 1)
  run_dir = args.run or rundir.latest_run()
  task, model_cfg, train_cfg = tasks.from_run_config(rundir.read_config(run_dir), run_dir)
  params = training.restore_params(run_dir, model_cfg, train_cfg)
  if params is None:
    raise cli.UsageError(f"run {run_dir!r} has no checkpoint; train it first")
  n_tokens = task.pad_id  # every id below PAD is a real token
  scores = induction_scores(model_cfg, mesh.to_host(params), n_tokens, args.n, args.seed)
  rows = [{"layer": layer, "head": head, "induction_score": float(scores[layer, head])}
          for layer in range(model_cfg.n_layers) for head in range(model_cfg.n_heads)]
  for row in sorted(rows, key=lambda r: -r["induction_score"]):
    print(f"layer {row['layer']} head {row['head']}: {row['induction_score']:.4f}")
  path = os.path.join(run_dir, "eval", "induction.json")
  cli.ensure_writable(os.path.dirname(path))
  rundir.write_json(path, rows)
  print(f"wrote {path} (uniform attention would score "
        f"{uniform_baseline(model_cfg.seq_len):.4f})")


if __name__ == "__main__":
  cli.run_main(main, bad_input=(checkpoints.CheckpointError,))
