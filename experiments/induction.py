"""Which heads are induction-like: attention from a repeated token to the token that followed
its previous occurrence, on sequences of distinct random tokens repeated twice.

  python -m experiments.induction --run=runs/code-python-s0
  python -m experiments.induction --run=runs/code-python-s0 --steps=all   # every checkpoint

A sequence is [r_1 .. r_T, r_1 .. r_T] with r_1 .. r_T drawn *without* replacement (T = the
vocabulary's real tokens or half the model's positions, the smaller), so in the second half
every token has exactly one earlier occurrence and one token to copy: an induction head at
query T + i (reading r_{i+1}) attends to key i + 1. (With tokens drawn with replacement a
token repeats inside a half, the copy target is ambiguous, and a perfect induction head
scores well below 1.) The score of a head is its attention mass on the copy targets - every
key k <= q whose previous token equals the query's token - averaged over the queries that
have one: 1 for a perfect induction head, `uniform_baseline` (between 1 / L and 2 / L, L the
sequence length) for one attending uniformly to every earlier position. Written to
<run>/eval/induction.json, one row per layer and head, with the baseline; with
`--steps=all`, the score of every kept checkpoint to <run>/eval/induction_steps.json (one
row per step, layer and head), so that when an induction head formed can be read off.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np

from experiments import cli
from pipeline import rundir, tasks
from models import checkpoints, mesh, training, transformer
from proxies import faithfulness


def copy_targets(tokens_BxL: np.ndarray) -> np.ndarray:
  """bool[B, L, L]: key k is a copy target of query q when k <= q and token k - 1 equals
  token q (k holds what followed an earlier occurrence of q's token)."""
  tokens_BxL = np.asarray(tokens_BxL)
  length = tokens_BxL.shape[1]
  same_BxLxL = np.zeros((len(tokens_BxL), length, length), bool)
  same_BxLxL[:, :, 1:] = tokens_BxL[:, :, None] == tokens_BxL[:, None, :-1]
  return same_BxLxL & np.tril(np.ones((length, length), bool))


def score_from_patterns(pattern_BxHxLxL: np.ndarray, tokens_BxL: np.ndarray) -> np.ndarray:
  """[H]: attention mass on the copy targets, mean over the queries that have any."""
  target_BxLxL = copy_targets(tokens_BxL)
  mass_BxHxL = (np.asarray(pattern_BxHxLxL) * target_BxLxL[:, None]).sum(-1)
  has_BxL = target_BxLxL.any(-1)
  if not has_BxL.any():
    raise ValueError("no query has a copy target: the sequences repeat no token")
  return mass_BxHxL.transpose(1, 0, 2)[:, has_BxL].mean(-1)


def uniform_baseline(tokens_BxL: np.ndarray) -> float:
  """The score of a head attending uniformly over every causal key (q + 1 keys)."""
  target_BxLxL = copy_targets(tokens_BxL)
  has_BxL = target_BxLxL.any(-1)
  per_query_BxL = target_BxLxL.sum(-1) / (np.arange(target_BxLxL.shape[1]) + 1)
  return float(per_query_BxL[has_BxL].mean())


def repeated_sequences(n_tokens: int, seq_len: int, n: int, seed: int) -> np.ndarray:
  """int32[n, 2T]: `n` sequences of T distinct tokens (0..n_tokens-1, without replacement)
  followed by the same T again; T = min(n_tokens, seq_len // 2)."""
  half = min(n_tokens, seq_len // 2)
  if half < 2:
    raise ValueError(f"need at least 2 tokens and 4 positions, got {n_tokens} and {seq_len}")
  rng = np.random.default_rng(seed)
  first = np.stack([rng.permutation(n_tokens)[:half] for _ in range(n)])
  return np.concatenate([first, first], axis=1).astype(np.int32)


def induction_scores(model, params, n_tokens: int, n: int = 64, seed: int = 0,
                     seq_len: int | None = None) -> tuple[np.ndarray, float]:
  """([n_layers, n_heads] scores, the uniform baseline) on `n` repeated sequences.
  `model`: a `ModelConfig`, or any `models.sites.SiteModel` with a pattern site, read
  through it; `seq_len`: the positions it takes (default: the config's)."""
  seq_len = seq_len or getattr(model, "seq_len", None)
  if seq_len is None:
    raise ValueError("induction_scores needs seq_len, the positions the model takes")
  model = faithfulness.site_model(model)
  tokens_BxL = repeated_sequences(n_tokens, seq_len, n, seed)
  heads = [(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)]
  patterns = faithfulness.capture(model, params, tokens_BxL,
                                  [(layer, head, "pattern") for layer, head in heads],
                                  batch_size=len(tokens_BxL))  # one batch, as many rows
  by_head = dict(zip(heads, patterns))
  scores = np.stack([
      score_from_patterns(np.stack([by_head[layer, h] for h in range(model.n_heads)], 1),
                          tokens_BxL)
      for layer in range(model.n_layers)])
  return scores, uniform_baseline(tokens_BxL)


def main(argv: Sequence[str]) -> None:
  parser = cli.Parser(prog="python -m experiments.induction", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", default=None, help="run directory (default: the latest)")
  parser.add_argument("--n", type=int, default=64, help="random sequences (default: 64)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--steps", choices=("latest", "all"), default="latest",
                      help="the newest checkpoint (induction.json) or every kept one "
                      "(induction_steps.json) (default: latest)")
  parser.add_argument("--out", default=None,
                      help="write the rows here instead of under <run>/eval/")
  args = parser.parse_args(argv)
  cli.check_range("n", args.n, 1, 10_000)
  cli.check_range("seed", args.seed, 0, 2**32 - 1)
  run_dir = args.run or rundir.latest_run()
  task, model_cfg, train_cfg = tasks.from_run_config(rundir.read_config(run_dir), run_dir)
  n_tokens = task.pad_id  # every id below PAD is a real token
  model = transformer.TransformerSites(model_cfg)

  def rows_at(step: int | None) -> tuple[list[dict], float]:
    params = training.restore_params(run_dir, model_cfg, train_cfg, step=step)
    if params is None:
      raise cli.UsageError(f"run {run_dir!r} has no checkpoint; train it first")
    scores, baseline = induction_scores(model, mesh.to_host(params), n_tokens, args.n,
                                        args.seed, seq_len=model_cfg.seq_len)
    return [{"layer": layer, "head": head, "induction_score": float(scores[layer, head]),
             "uniform_baseline": baseline}
            for layer in range(model_cfg.n_layers) for head in range(model_cfg.n_heads)], baseline

  out_dir = os.path.join(run_dir, "eval")
  cli.ensure_writable(os.path.dirname(os.path.abspath(args.out)) if args.out else out_dir)
  if args.steps == "all":
    ckpt = checkpoints.Checkpoints(run_dir, max_to_keep=None)
    try:
      steps = ckpt.steps()
    finally:
      ckpt.close()
    if not steps:
      raise cli.UsageError(f"run {run_dir!r} has no checkpoint; train it first")
    rows = []
    for step in steps:
      at, _ = rows_at(step)
      rows += [{"step": step, **r} for r in at]
      best = max(at, key=lambda r: r["induction_score"])
      print(f"step {step}: best layer {best['layer']} head {best['head']} "
            f"{best['induction_score']:.4f}", flush=True)
    path = args.out or os.path.join(out_dir, "induction_steps.json")
    rundir.write_json(path, rows)
    print(f"wrote {path}")
    return
  rows, baseline = rows_at(None)
  for row in sorted(rows, key=lambda r: -r["induction_score"]):
    print(f"layer {row['layer']} head {row['head']}: {row['induction_score']:.4f}")
  path = args.out or os.path.join(out_dir, "induction.json")
  rundir.write_json(path, rows)
  print(f"wrote {path} (uniform attention would score {baseline:.4f})")

if __name__ == "__main__":
  cli.run_main(main, bad_input=(checkpoints.CheckpointError,))
