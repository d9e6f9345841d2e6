"""Metrics on hand-built cases."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from proxies import faithfulness, metrics


def test_divergences_on_hand_built_distributions():
  p = jnp.array([1.0, 0.0])
  q = jnp.array([0.0, 1.0])
  u = jnp.array([0.5, 0.5])
  assert float(metrics.js_divergence(p, q)) == pytest.approx(math.log(2))
  assert float(metrics.js_divergence(p, p)) == 0.0
  assert float(metrics.total_variation(p, q)) == 1.0
  assert float(metrics.total_variation(p, u)) == 0.5
  assert float(metrics.kl_divergence(p, u)) == pytest.approx(math.log(2))
  assert float(metrics.kl_divergence(u, p)) == math.inf
  # JSD is symmetric and bounded even where KL is infinite.
  assert float(metrics.js_divergence(u, p)) == pytest.approx(float(metrics.js_divergence(p, u)))
  assert float(metrics.js_divergence(u, p)) < math.log(2)


def test_divergences_broadcast_over_leading_axes():
  p = jnp.full((3, 4, 5), 0.2)
  q = jnp.broadcast_to(jnp.array([0.6, 0.1, 0.1, 0.1, 0.1]), (2, 3, 4, 5))
  assert metrics.js_divergence(p, q).shape == (2, 3, 4)
  np.testing.assert_allclose(metrics.total_variation(p, q), 0.4, rtol=1e-6)


def test_decision_argmax_over_a_slice_and_yao_threshold():
  logits = jnp.array([[9.0, 0.0, 2.0, 1.0],   # argmax overall 0, over [2, 4) -> 2
                      [0.0, 0.0, 0.0, 5.0]])  # -> 3, with most of the slice's mass
  d = metrics.Decision(2, 4)
  assert d.predict(logits).tolist() == [2, 3]
  assert d.correct(logits, jnp.array([2, 2])).tolist() == [True, False]
  yao = metrics.Decision(2, 4, threshold=0.8)
  # row 0: softmax([2, 1]) gives 0.73 to id 2 -> below 0.8; row 1: 0.993 to id 3.
  assert yao.correct(logits, jnp.array([2, 3])).tolist() == [False, True]
  assert yao.correct(logits, jnp.array([-1, -1])).tolist() == [False, False]


def test_split_summary_divides_sums_by_counts():
  sums = {
      "n_scored": np.array([2.0, 2.0]), "n_query": np.array([4.0, 6.0]),
      "correct_model": np.array([2.0, 1.0]),
      "correct_proxy": np.array([[1.0, 1.0], [2.0, 1.0]]),
      "agree": np.array([[1.0, 0.0], [2.0, 2.0]]),
      "tv": np.array([[0.5, 0.5], [0.0, 0.0]]),
      "kl": np.array([[1.0, 0.0], [0.0, 0.0]]),
      "attention_jsd": np.array([[1.0, 1.0], [0.0, 0.0]]),
  }
  rows = faithfulness.SplitResult(sums).summary()
  assert rows[0] == {"accuracy_model": 0.75, "accuracy_proxy": 0.5, "agreement": 0.25,
                     "attention_jsd": 0.2, "tv": 0.25, "kl": 0.25, "n": 4}
  assert rows[1]["agreement"] == 1.0 and rows[1]["accuracy_proxy"] == 0.75


def test_fixed_batches_pad_the_last_batch():
  arrays = {"x": np.arange(10).reshape(5, 2)}
  batches = list(faithfulness.fixed_batches(arrays, 2, {"x": -1}))
  assert [real for _, real in batches] == [2, 2, 1]
  assert batches[-1][0]["x"].tolist() == [[8, 9], [-1, -1]]
