"""The svd proxy and the one-program sweep."""

import jax
import numpy as np
import pytest

import proxies
from models import transformer
from proxies import faithfulness, metrics, svd

from tests.tiny import CFG, PAD


def fitted(params, inputs, ranks, layer=1, head=1, **options):
  acts = faithfulness.collect_activations(CFG, params, inputs, PAD, [(layer, head)], ("q", "k"))
  spec = proxies.ProxySpec("svd", ((layer, head),), ("q", "k"), tuple(ranks),
                           tuple(options.items()))
  return proxies.fit(spec, acts)


def arrays_for(inputs):
  gold = np.where(inputs % 2 == 0, 3, 4).astype(np.int32)
  return {"inputs": inputs, "gold": gold, "scored": inputs != PAD}


def test_collected_activations_skip_padding(params, inputs):
  acts, = faithfulness.collect_activations(CFG, params, inputs, PAD, [(1, 1)], ("q", "k"))
  assert acts["q"].shape == ((inputs != PAD).sum(), CFG.d_head)


@pytest.mark.parametrize("centered,separate", [(False, False), (True, False), (False, True)])
def test_projection_is_idempotent_and_of_rank_r(params, inputs, centered, separate):
  proxy = fitted(params, inputs, (1, 3, 8), centered=centered, separate=separate)
  for i, r in enumerate((1, 3, 8)):
    for site in ("q", "k"):
      p = proxy.arrays[0][f"projector_{site}"][i]
      np.testing.assert_allclose(p @ p, p, atol=1e-5)
      assert np.linalg.matrix_rank(p, tol=1e-4) == r
  x = np.random.default_rng(1).normal(size=(5, CFG.d_head)).astype(np.float32)
  one = jax.tree_util.tree_map(lambda a: a[1], proxy.arrays[0])
  once = svd.apply(one, "q", x)
  np.testing.assert_allclose(svd.apply(one, "q", once), once, atol=1e-5)


def test_joint_basis_is_shared_and_separate_is_not(params, inputs):
  joint = fitted(params, inputs, (2,))
  separate = fitted(params, inputs, (2,), separate=True)
  np.testing.assert_allclose(joint.arrays[0]["projector_q"], joint.arrays[0]["projector_k"])
  assert not np.allclose(separate.arrays[0]["projector_q"], separate.arrays[0]["projector_k"])


def test_top_directions_recover_a_planted_subspace():
  rng = np.random.default_rng(0)
  basis = np.linalg.qr(rng.normal(size=(6, 2)))[0]
  x = rng.normal(size=(500, 2)) @ basis.T * 10 + rng.normal(size=(500, 6)) * 0.01
  _, directions = svd.top_directions(x, centered=False)
  np.testing.assert_allclose(svd.projector(directions, 2), basis @ basis.T, atol=1e-3)


def test_full_rank_proxy_equals_the_model(params, inputs):
  proxy = fitted(params, inputs, (CFG.d_head,))
  program = faithfulness.FaithfulnessProgram(CFG, metrics.Decision(0, 10), PAD)
  row = faithfulness.evaluate(program, params, proxy, arrays_for(inputs), 8, PAD).summary()[0]
  assert row["agreement"] == 1.0
  assert row["accuracy_proxy"] == row["accuracy_model"]
  assert row["attention_jsd"] < 1e-6 and row["tv"] < 1e-5


@pytest.mark.parametrize("settings_per_step", [1, 2, 3])
def test_sweep_in_one_program_equals_one_call_per_setting(params, inputs, settings_per_step):
  ranks = (1, 2, 4)
  sweep = fitted(params, inputs, ranks)
  program = faithfulness.FaithfulnessProgram(CFG, metrics.Decision(0, 10), PAD,
                                             settings_per_step=settings_per_step)
  together = faithfulness.evaluate(program, params, sweep, arrays_for(inputs), 8, PAD).summary()
  for i in range(len(ranks)):
    single = jax.tree_util.tree_map(lambda a: a[i:i + 1], sweep)
    alone = faithfulness.evaluate(program, params, single, arrays_for(inputs), 8, PAD).summary()
    for key, value in alone[0].items():
      assert together[i][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (ranks[i], key)
  assert together[0]["agreement"] < 1.0  # rank 1 of 8 is not the model


def test_batch_size_does_not_change_the_result(params, inputs):
  sweep = fitted(params, inputs, (2,))
  program = faithfulness.FaithfulnessProgram(CFG, metrics.Decision(0, 10), PAD)
  a = faithfulness.evaluate(program, params, sweep, arrays_for(inputs), 5, PAD).summary()[0]
  b = faithfulness.evaluate(program, params, sweep, arrays_for(inputs), 24, PAD).summary()[0]
  for key in a:
    assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7)


@pytest.mark.slow  # compiles four programs for their cost analysis
def test_work_upstream_of_the_site_is_done_once(params, inputs):
  """FLOPs of the program grow with the number of settings only by the work downstream of
  the simplified site: a sweep on layer 1 adds less per setting than one on layer 0."""

  def flops(layer, n_settings):
    proxy = fitted(params, inputs, (2,) * n_settings, layer=layer)
    # Every setting side by side: XLA's cost analysis counts a loop's body once.
    program = faithfulness.FaithfulnessProgram(CFG, metrics.Decision(0, 10), PAD,
                                               settings_per_step=n_settings)
    lowered = program.lower(*program.place(params, proxy), arrays_for(inputs[:8]))
    return lowered.compile().cost_analysis()["flops"]

  per_setting_layer0 = flops(0, 5) - flops(0, 1)
  per_setting_layer1 = flops(1, 5) - flops(1, 1)
  base = flops(1, 1)
  assert per_setting_layer1 < per_setting_layer0
  # Five settings cost far less than five separate model runs would.
  assert flops(1, 5) < 5 * base


def test_proxy_spec_labels_and_round_trip():
  spec = proxies.ProxySpec("svd", ((1, 0),), ("q", "k"), (1, 4), (("centered", True),))
  assert [row["rank"] for row in spec.labels()] == [1, 4]
  assert spec.to_dict()["options"] == {"centered": True}


@pytest.mark.slow  # compiles every (width, slots) shape of the ladder twice
def test_length_buckets_and_read_out_slots_give_the_same_sums_as_full_padding():
  """Per-string and per-group sums of a bucketed, slot-gathered evaluation equal a direct
  computation at every position of full-width arrays (the plain definition)."""
  cfg = transformer.ModelConfig(vocab_size=11, seq_len=64, n_layers=2, n_heads=1,
                                d_model=16, d_head=8, d_mlp=32)
  params = transformer.init_params(cfg, seed=1)
  rng = np.random.default_rng(3)
  inputs = rng.integers(0, PAD, (40, cfg.seq_len)).astype(np.int32)
  for row, length in enumerate(rng.integers(2, cfg.seq_len + 1, 40)):
    inputs[row, length:] = PAD  # lengths spread over every bucket of the ladder
  arrays = {"inputs": inputs, "gold": np.where(inputs % 2 == 0, 3, 4).astype(np.int32),
            "scored": (inputs != PAD) & (rng.random(inputs.shape) < 0.2),
            "bucket": rng.integers(-1, 3, inputs.shape).astype(np.int32)}
  acts = faithfulness.collect_activations(cfg, params, inputs, PAD, [(1, 0)], ("q", "k"))
  sweep = proxies.fit(proxies.ProxySpec("svd", ((1, 0),), ("q", "k"), (1, 4)), acts)
  program = faithfulness.FaithfulnessProgram(cfg, metrics.Decision(0, 10), PAD, {"bucket": 3})
  bucketed = faithfulness.evaluate(program, params, sweep, arrays, 8, PAD)
  assert {w for _, w, _ in program.shapes} == {16, 32, 64}  # cut to the ladder
  assert all(t < 8 * w for _, w, t in program.shapes)  # fewer slots than positions
  padded = faithfulness.evaluate(program, params, sweep, arrays, 8, PAD, by_length=False)

  model = transformer.Transformer(cfg)
  decision = metrics.Decision(0, 10)
  logits, state = model.apply({"params": params}, inputs, mutable=["intermediates"])
  pattern = state["intermediates"]["block_1"]["attention"]["pattern"][0][:, 0]
  scored, query = arrays["scored"], inputs != PAD
  expected = {"n_scored": scored.sum(1), "n_query": query.sum(1),
              "correct_model": (decision.correct(logits, arrays["gold"]) & scored).sum(1)}
  log_probs = jax.nn.log_softmax(logits)
  expected["nll_model"] = -(np.take_along_axis(log_probs, arrays["gold"][..., None], -1)[..., 0]
                            * scored).sum(1)
  for p in range(2):
    one = sweep.setting(p)
    logits_p, state_p = model.apply({"params": params}, inputs, intervention=one,
                                    mutable=["intermediates"])
    pattern_p = state_p["intermediates"]["block_1"]["attention"]["pattern"][0][:, 0]
    probs, probs_p = jax.nn.softmax(logits), jax.nn.softmax(logits_p)
    per_string = {
        "agree": (decision.predict(logits) == decision.predict(logits_p)) & scored,
        "tv": metrics.total_variation(probs, probs_p) * scored,
        "kl": metrics.kl_divergence(probs, probs_p) * scored,
        "attention_jsd": metrics.js_divergence(pattern, pattern_p) * query}
    for name, v in per_string.items():
      expected.setdefault(name, []).append(np.asarray(v).sum(1))
  for name, want in expected.items():
    np.testing.assert_allclose(bucketed.sequence[name], np.asarray(want), rtol=1e-4,
                               atol=1e-5, err_msg=name)
    np.testing.assert_allclose(bucketed.sequence[name], padded.sequence[name], rtol=1e-4,
                               atol=1e-5, err_msg=name)
    np.testing.assert_allclose(bucketed.groups["bucket"][name],
                               padded.groups["bucket"][name], rtol=1e-4, atol=1e-5,
                               err_msg=name)
  np.testing.assert_allclose(bucketed.groups["bucket"]["n_scored"],
                             [(scored & (arrays["bucket"] == b)).sum() for b in range(3)])
