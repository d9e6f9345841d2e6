"""The induction score: 1 for a perfect induction pattern, the baseline for uniform attention."""

import numpy as np

from experiments import induction
from models import transformer


def test_score_of_synthetic_patterns():
  half, length = 6, 12
  perfect = np.zeros((2, 3, length, length))
  for q in range(length):
    perfect[:, :, q, q] = 1.0  # attend to self...
  for q in range(half, 2 * half - 1):
    perfect[:, 0, q] = 0.0
    perfect[:, 0, q, q - half + 1] = 1.0  # ...except head 0, an induction head
  uniform = np.tril(np.ones((length, length)))
  uniform = np.broadcast_to(uniform / uniform.sum(-1, keepdims=True), (2, 3, length, length))
  scores = induction.score_from_patterns(perfect, half)
  np.testing.assert_allclose(scores, [1.0, 0.0, 0.0])
  np.testing.assert_allclose(induction.score_from_patterns(uniform, half),
                             induction.uniform_baseline(length))


def test_scores_of_a_model_are_per_layer_and_head_and_seeded():
  cfg = transformer.ModelConfig(vocab_size=11, seq_len=16, n_layers=2, n_heads=3, d_model=16,
                                d_head=8, d_mlp=32)
  params = transformer.init_params(cfg, seed=0)
  a = induction.induction_scores(cfg, params, n_tokens=10, n=8, seed=0)
  assert a.shape == (2, 3) and np.all((a >= 0) & (a <= 1))
  np.testing.assert_array_equal(a, induction.induction_scores(cfg, params, 10, n=8, seed=0))
  assert not np.array_equal(a, induction.induction_scores(cfg, params, 10, n=8, seed=1))
