"""The kmeans, onehot and weight_svd proxies: each fit is right, and each runs in the program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans

import proxies
from models import transformer
from proxies import faithfulness, kmeans, metrics, onehot, weight_svd
from tests.test_proxies import arrays_for
from tests.tiny import CFG, PAD


def gaussian_mixture(n, d, centers, seed):
  rng = np.random.default_rng(seed)
  means = rng.normal(size=(centers, d)) * 3
  return (means[rng.integers(0, centers, n)] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.mark.slow  # 16 data sets x K, each fitted by us and by scikit-learn
def test_kmeans_inertia_within_one_percent_of_scikit_learn():
  """Same data, same number of k-means++ restarts. Both fits are random: which restart
  lands in the best basin is luck, and single cases below go either way by up to ~3 %
  (ours is ahead on some). So the 1 % bound is on the mean ratio over a grid of data sets
  and K, and no single case may be more than 5 % behind."""
  ratios = []
  for data_seed in range(4):
    x = gaussian_mixture(3000, 16, centers=12, seed=data_seed)
    for k in (2, 8, 16, 32):
      _, ours = kmeans.kmeans(jnp.asarray(x), k, jax.random.key(0))
      theirs = KMeans(n_clusters=k, n_init=kmeans.N_INIT, random_state=0).fit(x).inertia_
      ratios.append(float(ours) / theirs)
  assert np.mean(ratios) <= 1.01 and max(ratios) <= 1.05, np.round(ratios, 4)


def test_kmeans_sweep_pads_centroids_and_never_uses_the_padding():
  x = {"q": gaussian_mixture(600, 8, 5, 0), "k": gaussian_mixture(600, 8, 5, 1)}
  sweep = kmeans.fit(x, (1, 3, 6), {"separate": False, "seed": 0})
  assert sweep["centroids_q"].shape == (3, 6, 8)
  assert sweep["valid_q"].sum(-1).tolist() == [1, 3, 6]
  one = {name: a[1] for name, a in sweep.items()}  # K = 3
  out = np.asarray(kmeans.apply(one, "q", jnp.asarray(x["q"][None])))[0]
  used = {tuple(row) for row in out}
  assert len(used) <= 3 and used <= {tuple(c) for c in one["centroids_q"][:3]}
  # K = 1 is the mean of everything clustered (queries and keys jointly).
  np.testing.assert_allclose(sweep["centroids_q"][0, 0],
                             np.concatenate([x["q"], x["k"]]).mean(0), rtol=1e-4, atol=1e-4)


def test_kmeans_result_for_a_k_does_not_depend_on_the_rest_of_the_sweep():
  x = {"q": gaussian_mixture(800, 8, 6, 3)}
  alone = kmeans.fit(x, (4,), {"separate": False, "seed": 0})
  swept = kmeans.fit(x, (2, 4, 16), {"separate": False, "seed": 0})
  np.testing.assert_allclose(swept["centroids_q"][1, :4], alone["centroids_q"][0], atol=1e-4)


def test_kmeans_seed_seeds():
  x = {"q": gaussian_mixture(500, 4, 20, 0)}
  fit = lambda seed: kmeans.fit(x, (8,), {"separate": False, "seed": seed})["centroids_q"]
  np.testing.assert_array_equal(fit(0), fit(0))
  assert not np.allclose(fit(0), fit(1))


def test_onehot_puts_all_mass_on_the_latest_causal_argmax():
  pattern = np.array([[1.0, 0, 0], [0.5, 0.5, 0], [0.2, 0.5, 0.3]], np.float32)[None]
  out = np.asarray(onehot.apply({}, "pattern", jnp.asarray(pattern)))
  assert out.tolist() == [[[1, 0, 0], [0, 1, 0], [0, 1, 0]]]  # the tie in row 1 -> latest


def test_onehot_proxy_runs_as_one_setting_and_makes_attention_hard(params, inputs):
  proxy = proxies.fit(proxies.ProxySpec("onehot", ((1, 1),), ("pattern",)), [{}])
  assert proxy.size == 1
  program = faithfulness.FaithfulnessProgram(CFG, metrics.Decision(0, 10), PAD)
  row = faithfulness.evaluate(program, params, proxy, arrays_for(inputs), 8, PAD).summary()[0]
  assert 0 < row["attention_jsd"] <= np.log(2)
  captured = transformer.Transformer(CFG).apply(
      {"params": params}, inputs, intervention=proxy, mutable=["intermediates"])[1]
  pattern = np.asarray(captured["intermediates"]["block_1"]["attention"]["pattern"][0])
  assert set(np.unique(pattern[:, 1])) == {0.0, 1.0}  # the simplified head is hard
  assert len(np.unique(pattern[:, 0])) > 2  # the other head is untouched


def test_weight_svd_realizes_the_truncated_bilinear_form(params):
  w = jax.tree_util.tree_map(np.asarray, transformer.head_weights(params, 1, 1))
  ranks = (1, 3, CFG.d_head)
  arrays = weight_svd.fit(w, ranks, {})
  for i, r in enumerate(ranks):
    a = arrays["query_map"][i].astype(np.float64)
    realized = w["query"] @ a @ w["key"].T
    np.testing.assert_allclose(realized, weight_svd.truncated_bilinear(w["query"], w["key"], r),
                               atol=1e-5)
    assert np.linalg.matrix_rank(realized, tol=1e-5) == r
  np.testing.assert_allclose(w["query"] @ arrays["query_map"][-1] @ w["key"].T,
                             w["query"] @ w["key"].T, atol=1e-5)  # full rank: the head itself


def test_weight_svd_at_full_rank_equals_the_model(params, inputs):
  spec = proxies.ProxySpec("weight_svd", ((1, 1),), ("q",), (1, CFG.d_head))
  proxy = proxies.fit(spec, [jax.tree_util.tree_map(np.asarray,
                                                    transformer.head_weights(params, 1, 1))])
  program = faithfulness.FaithfulnessProgram(CFG, metrics.Decision(0, 10), PAD)
  rows = faithfulness.evaluate(program, params, proxy, arrays_for(inputs), 8, PAD).summary()
  assert rows[1]["agreement"] == 1.0 and rows[1]["attention_jsd"] < 1e-6
  assert rows[0]["attention_jsd"] > 1e-4  # rank 1 changes the attention


def test_group_sums_add_up_to_the_split_totals(params, inputs):
  acts = faithfulness.collect_activations(CFG, params, inputs, PAD, [(1, 1)], ("q", "k"))
  proxy = proxies.fit(proxies.ProxySpec("kmeans", ((1, 1),), ("q", "k"), (2, 4)), acts)
  program = faithfulness.FaithfulnessProgram(CFG, metrics.Decision(0, 10), PAD, {"bucket": 3})
  arrays = arrays_for(inputs)
  arrays["bucket"] = (inputs % 4).astype(np.int32)  # bucket 3 lies outside 0..2: in no group
  result = faithfulness.evaluate(program, params, proxy, arrays, 8, PAD)
  in_groups = arrays["scored"] & (arrays["bucket"] < 3)
  for name in faithfulness.SUMS:
    assert result.groups["bucket"][name].shape[-1] == 3
  np.testing.assert_allclose(result.groups["bucket"]["n_scored"].sum(), in_groups.sum())
  by_bucket = result.by_group("bucket")
  assert len(by_bucket) == 2 and by_bucket[0][1]["n"] == (arrays["scored"] & (arrays["bucket"] == 1)).sum()
  agree_total = sum(row["agreement"] * row["n"] for row in by_bucket[0] if row["n"])
  agree_3 = result.sequence["agree"][0].sum() - agree_total
  # what is left over is exactly the positions of bucket 3
  assert 0 <= agree_3 <= (arrays["scored"] & (arrays["bucket"] == 3)).sum()
