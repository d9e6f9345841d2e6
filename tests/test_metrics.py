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


def split_result():
  """Two proxy settings over two strings, each string with 2 scored positions."""
  sums = {
      "n_scored": np.array([2.0, 2.0]), "n_query": np.array([4.0, 6.0]),
      "correct_model": np.array([2.0, 1.0]), "nll_model": np.array([0.0, 4 * np.log(2)]),
      "correct_proxy": np.array([[1.0, 1.0], [2.0, 1.0]]),
      "agree": np.array([[1.0, 0.0], [2.0, 2.0]]),
      "both_wrong": np.array([[0.0, 0.0], [0.0, 1.0]]),
      "tv": np.array([[0.5, 0.5], [0.0, 0.0]]),
      "kl": np.array([[1.0, 0.0], [0.0, 0.0]]),
      "attention_jsd": np.array([[1.0, 1.0], [0.0, 0.0]]),
  }
  return faithfulness.SplitResult(sums, {})


def test_split_summary_divides_sums_by_counts():
  rows = split_result().summary()
  # Setting 0 errs on 2 positions, the model on 1 other: no error in common.
  assert rows[0] == {"accuracy_model": 0.75, "bits_model": 1.0, "accuracy_proxy": 0.5,
                     "agreement": 0.25,
                     "attention_jsd": 0.2, "tv": 0.25, "kl": 0.25, "shared_errors": 0.0,
                     "error_overlap": 0.0, "n": 4}
  # Setting 1 errs exactly where the model errs.
  assert rows[1]["agreement"] == 1.0 and rows[1]["accuracy_proxy"] == 0.75
  assert rows[1]["shared_errors"] == 1.0 and rows[1]["error_overlap"] == 1.0


def test_metrics_of_an_empty_bucket_are_none_not_nan():
  empty = {k: np.zeros((1, 3)) if k in faithfulness.PROXY_SUMS else np.zeros(3)
           for k in faithfulness.SUMS}
  rows = faithfulness.SplitResult({k: v[..., :1] for k, v in empty.items()},
                                  {"depth": empty}).by_group("depth")
  assert len(rows) == 1 and len(rows[0]) == 3
  assert rows[0][0]["agreement"] is None and rows[0][0]["n"] == 0


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_strings():
  rng = np.random.default_rng(0)

  def result(n):
    agree = (rng.random(n) < 0.7).astype(float) * 4
    sums = {"n_scored": np.full(n, 4.0), "n_query": np.full(n, 8.0),
            "correct_model": np.full(n, 4.0), "nll_model": np.zeros(n),
            "correct_proxy": agree[None],
            "agree": agree[None], "both_wrong": np.zeros((1, n)), "tv": np.zeros((1, n)),
            "kl": np.zeros((1, n)), "attention_jsd": np.zeros((1, n))}
    return faithfulness.SplitResult(sums, {})

  small, large = result(100), result(2000)
  for r in (small, large):
    ci, estimate = r.bootstrap(n_resamples=500, seed=0)[0], r.summary()[0]["agreement"]
    assert ci["agreement_lo"] < estimate < ci["agreement_hi"]
  width = lambda r: r.bootstrap(500, 0)[0]["agreement_hi"] - r.bootstrap(500, 0)[0]["agreement_lo"]
  assert width(large) < width(small) / 2  # ~ 1 / sqrt(n)
  assert small.bootstrap(500, 1) != small.bootstrap(500, 2)  # the seed seeds
  assert small.bootstrap(500, 1) == small.bootstrap(500, 1)


def test_fixed_batches_pad_the_last_batch():
  arrays = {"x": np.arange(10).reshape(5, 2)}
  batches = list(faithfulness.fixed_batches(arrays, 2, {"x": -1}))
  assert [rows.tolist() for _, rows in batches] == [[0, 1], [2, 3], [4]]
  assert batches[-1][0]["x"].tolist() == [[8, 9], [-1, -1]]


def test_length_batches_sort_by_length_and_cut_to_the_ladder():
  pad = 9
  inputs = np.full((5, 32), pad)
  for row, length in enumerate((20, 3, 32, 5, 16)):
    inputs[row, :length] = 1
  scored = np.zeros_like(inputs, bool)
  scored[1, 6] = True  # a scored position past the last token still counts as used
  widths = faithfulness.length_ladder(32, smallest=8)
  assert widths == (8, 16, 32)
  batches = list(faithfulness.fixed_batches({"inputs": inputs, "scored": scored}, 2,
                                            {"inputs": pad, "scored": False}, widths))
  assert [rows.tolist() for _, rows in batches] == [[3, 1], [4, 0], [2]]
  assert [b["inputs"].shape for b, _ in batches] == [(2, 8), (2, 32), (2, 32)]
  assert batches[0][0]["scored"][1, 6]
