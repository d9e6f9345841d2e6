"""The Transformer: causal, jit-invariant, sites captured for free, interventions exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import sites, transformer

from tests.tiny import CFG


def tokens(seed=0, batch=3):
  return jax.random.randint(jax.random.key(seed), (batch, CFG.seq_len), 0, CFG.vocab_size)


def test_model_is_causal(params):
  model = transformer.Transformer(CFG)
  x = tokens()
  y = x.at[:, 7:].set((x[:, 7:] + 1) % CFG.vocab_size)
  a, b = model.apply({"params": params}, x), model.apply({"params": params}, y)
  np.testing.assert_array_equal(a[:, :7], b[:, :7])
  assert not np.allclose(a[:, 7:], b[:, 7:])


def test_jit_equals_no_jit(params):
  model = transformer.Transformer(CFG)
  x = tokens(1)
  eager = model.apply({"params": params}, x)
  jitted = jax.jit(model.apply)({"params": params}, x)
  np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-5)


def test_same_seed_same_params_and_seed_matters():
  a, b = transformer.init_params(CFG, 5), transformer.init_params(CFG, 5)
  c = transformer.init_params(CFG, 6)
  leaves = lambda p: jax.tree_util.tree_leaves(p)
  assert all((x == y).all() for x, y in zip(leaves(a), leaves(b)))
  assert not all((x == y).all() for x, y in zip(leaves(a), leaves(c)))


def test_capture_returns_every_site_and_changes_nothing(params):
  model = transformer.Transformer(CFG)
  x = tokens(2)
  plain = model.apply({"params": params}, x)
  captured, state = model.apply({"params": params}, x, mutable=["intermediates"])
  np.testing.assert_array_equal(plain, captured)
  block = state["intermediates"]["block_1"]
  assert block["resid_pre"][0].shape == (3, CFG.seq_len, CFG.d_model)
  for site in ("q", "k", "v"):
    assert block["attention"][site][0].shape == (3, CFG.seq_len, CFG.n_heads, CFG.d_head)
  pattern = block["attention"]["pattern"][0]
  assert pattern.shape == (3, CFG.n_heads, CFG.seq_len, CFG.seq_len)
  np.testing.assert_allclose(pattern.sum(-1), 1.0, rtol=1e-5)
  assert float(jnp.triu(pattern, 1).max()) == 0.0  # no attention to the future


def test_capture_off_compiles_to_the_same_program(params):
  """Sow without a mutable collection leaves no trace in the compiled computation."""
  x = tokens(3)

  def plain(p, x):
    return transformer.Transformer(CFG).apply({"params": p}, x)

  hlo = jax.jit(plain).lower(params, x).as_text()
  assert "intermediates" not in hlo
  flops = jax.jit(plain).lower(params, x).compile().cost_analysis()
  captured = jax.jit(lambda p, x: transformer.Transformer(CFG).apply(
      {"params": p}, x, mutable=["intermediates"])[0]).lower(params, x).compile().cost_analysis()
  assert flops["flops"] == captured["flops"]


class Scale:
  """A hand-made intervention: multiplies one head's site by a constant."""

  def __init__(self, layer, head, site, factor):
    self.targets, self.factor = frozenset({sites.target(layer, head, site)}), factor

  def __call__(self, target, x):
    return x * self.factor


def test_identity_intervention_is_exact_and_others_act_on_one_head(params):
  model = transformer.Transformer(CFG)
  x = tokens(4)
  plain = model.apply({"params": params}, x)
  for site in ("q", "k", "v", "resid_pre"):
    same = model.apply({"params": params}, x, intervention=Scale(1, 0, site, 1.0))
    np.testing.assert_allclose(plain, same, rtol=1e-6, atol=1e-6)
  _, state = model.apply({"params": params}, x, intervention=Scale(1, 1, "v", 0.0),
                         mutable=["intermediates"])
  v = state["intermediates"]["block_1"]["attention"]["v"][0]
  assert float(jnp.abs(v[:, :, 1]).max()) == 0.0 and float(jnp.abs(v[:, :, 0]).max()) > 0
  # Layer 0's activations are upstream of a layer-1 intervention and do not change.
  _, before = model.apply({"params": params}, x, mutable=["intermediates"])
  np.testing.assert_array_equal(state["intermediates"]["block_0"]["attention"]["q"][0],
                                before["intermediates"]["block_0"]["attention"]["q"][0])


@pytest.mark.slow  # trains
def test_bfloat16_computes_in_bf16_and_keeps_float32_master_weights(tmp_path):
  """Mixed precision: activations in bfloat16, parameters and optimizer state in float32,
  logits and loss in float32; training still lowers the loss."""
  from models import training

  cfg = transformer.ModelConfig(**{**CFG.__dict__, "dtype": "bfloat16"})
  params = transformer.init_params(cfg, seed=0)
  assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float32")}
  q = transformer.capture(cfg, params, tokens(), 1, "q")
  assert q.dtype == jnp.bfloat16
  assert transformer.Transformer(cfg).apply({"params": params}, tokens()).dtype == jnp.float32

  rng = np.random.default_rng(0)
  data = rng.integers(0, 10, (8, CFG.seq_len)).astype(np.int32)  # one batch, memorized
  batches = lambda step: {"inputs": data, "targets": np.roll(data, -1, axis=1)}
  losses = []
  train_cfg = training.TrainConfig(steps=40, batch_size=8, learning_rate=1e-2, warmup_steps=0,
                                   log_every=20, eval_every=20, checkpoint_every=40)
  trained = training.train(cfg, train_cfg, str(tmp_path), pad_id=10, batches=batches,
                           evaluate=lambda p: {}, log=losses.append)
  assert {x.dtype for x in jax.tree_util.tree_leaves(trained)} == {np.dtype("float32")}
  first, last = (float(line.split()[3]) for line in (losses[0], losses[-1]))
  assert np.isfinite(last) and last < first
