"""The induction score: 1 for a perfect induction pattern, about 1 / L for uniform attention."""

import numpy as np
import pytest

from experiments import induction
from models import transformer


def test_a_perfect_induction_pattern_scores_1_and_uniform_about_1_over_l():
  tokens_BxL = induction.repeated_sequences(n_tokens=20, seq_len=64, n=3, seed=0)
  b, length = tokens_BxL.shape
  half = length // 2
  assert length == 40  # T = 20 distinct tokens, then the same 20
  assert all(len(set(row[:half])) == half for row in tokens_BxL)
  pattern = np.zeros((b, 3, length, length))
  pattern[:, :, np.arange(length), np.arange(length)] = 1.0  # heads 1, 2: attend to self
  for q in range(half, length):  # head 0: from r_{i+1}'s repeat to what followed it
    pattern[:, 0, q] = 0.0
    pattern[:, 0, q, q - half + 1] = 1.0
  scores = induction.score_from_patterns(pattern, tokens_BxL)
  np.testing.assert_allclose(scores, [1.0, 0.0, 0.0], atol=1e-6)

  uniform = np.tril(np.ones((length, length)))
  uniform = np.broadcast_to(uniform / uniform.sum(-1, keepdims=True), (b, 3, length, length))
  got = induction.score_from_patterns(uniform, tokens_BxL)
  expected = np.mean(1.0 / (np.arange(half, length) + 1))  # one target among q + 1 keys
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  np.testing.assert_allclose(induction.uniform_baseline(tokens_BxL), expected, rtol=1e-12)
  assert 1 / length < expected < 2 / length


def test_with_repeated_tokens_every_copy_target_counts():
  # "a b a b | a b a b": the query reading the second-half 'a' has targets after each 'a'.
  tokens_BxL = np.array([[0, 1, 0, 1, 0, 1, 0, 1]])
  targets = induction.copy_targets(tokens_BxL)[0]
  assert np.flatnonzero(targets[4]).tolist() == [1, 3]
  spread = np.zeros((1, 1, 8, 8))
  for q in range(8):
    keys = np.flatnonzero(targets[q])
    spread[0, 0, q, keys if len(keys) else q] = 1.0 / max(len(keys), 1)
  np.testing.assert_allclose(induction.score_from_patterns(spread, tokens_BxL), [1.0])


def test_sequences_without_any_repeat_are_an_error():
  with pytest.raises(ValueError, match="no query has a copy target"):
    induction.score_from_patterns(np.ones((1, 1, 3, 3)) / 3, np.array([[0, 1, 2]]))


def test_scores_of_a_model_are_per_layer_and_head_and_seeded():
  cfg = transformer.ModelConfig(vocab_size=11, seq_len=16, n_layers=2, n_heads=3, d_model=16,
                                d_head=8, d_mlp=32)
  params = transformer.init_params(cfg, seed=0)
  a, baseline = induction.induction_scores(cfg, params, n_tokens=10, n=8, seed=0)
  assert a.shape == (2, 3) and np.all((a >= 0) & (a <= 1 + 1e-6)) and 0 < baseline < 1
  np.testing.assert_array_equal(a, induction.induction_scores(cfg, params, 10, n=8, seed=0)[0])
  assert not np.array_equal(a, induction.induction_scores(cfg, params, 10, n=8, seed=1)[0])


def test_every_checkpoint_is_scored_and_the_newest_matches_the_latest(trained, tmp_path):
  import json
  import shutil

  _, run_dir = trained
  copy = tmp_path / "run"
  shutil.copytree(run_dir, copy)
  induction.main([f"--run={copy}", "--n=4"])
  induction.main([f"--run={copy}", "--n=4", "--steps=all"])
  latest = json.loads((copy / "eval" / "induction.json").read_text())
  by_step = json.loads((copy / "eval" / "induction_steps.json").read_text())
  steps = sorted({r["step"] for r in by_step})
  assert len(steps) >= 2 and len(by_step) == len(steps) * len(latest)
  newest = [{k: v for k, v in r.items() if k != "step"} for r in by_step if r["step"] == steps[-1]]
  assert newest == latest
