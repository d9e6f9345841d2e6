"""Every proxy kind's `apply` and every metric give the same values with and without jit
(nanodo's practice): nothing in them depends on Python-level values of traced arrays, and
eager execution stays available for debugging."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import proxies
from models import sites, transformer
from proxies import faithfulness, metrics

from tests.tiny import CFG, PAD


def fitted(kind, params, inputs):
  k = proxies.KINDS[kind]
  values = {"rank": (1, 4), "k": (2, 5)}.get(k.sweep, ())
  spec = proxies.ProxySpec(kind, ((1, 1),), k.sites, values, tuple(k.options.items()))
  if k.fits_on == "activations":
    fit_inputs = faithfulness.collect_activations(CFG, params, inputs, PAD, spec.heads,
                                                  spec.sites)
  elif k.fits_on == "weights":
    fit_inputs = [jax.tree_util.tree_map(np.asarray, transformer.head_weights(params, 1, 1))]
  else:
    fit_inputs = [{}]
  return proxies.fit(spec, fit_inputs)


@pytest.mark.parametrize("kind", sorted(proxies.KINDS))
def test_each_kind_applies_the_same_with_and_without_jit(kind, params, inputs):
  proxy = fitted(kind, params, inputs)
  rng = np.random.default_rng(1)
  for i in range(proxy.size):
    one = proxy.setting(i) if jax.tree_util.tree_leaves(proxy.arrays) else proxy
    for site in proxy.sites:
      shape = (3, CFG.seq_len, CFG.seq_len) if site == "pattern" else (3, CFG.seq_len, CFG.d_head)
      x = jnp.asarray(rng.random(shape), jnp.float32)
      eager = one(target(site), x)
      jitted = jax.jit(lambda p, x, site=site: p(target(site), x))(one, x)
      np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-6, err_msg=f"{kind} {site}")
      assert not np.allclose(eager, x), (kind, site)  # the proxy does something


def target(site):
  return sites.target(1, 1, site)


def test_the_model_under_a_proxy_is_the_same_with_and_without_jit(params, inputs):
  proxy = fitted("svd", params, inputs).setting(0)
  model = transformer.Transformer(CFG)
  apply = lambda p, x, i: model.apply({"params": p}, x, intervention=i)
  with jax.disable_jit():
    eager = apply(params, inputs, proxy)
  np.testing.assert_allclose(eager, jax.jit(apply)(params, inputs, proxy), rtol=1e-4, atol=1e-5)


def test_metrics_are_the_same_with_and_without_jit():
  rng = np.random.default_rng(2)
  p, q = (jnp.asarray(rng.dirichlet(np.ones(7), (4, 5)), jnp.float32) for _ in range(2))
  logits = jnp.asarray(rng.normal(size=(4, 5, 7)), jnp.float32)
  gold = jnp.asarray(rng.integers(2, 6, (4, 5)))
  decisions = [metrics.Decision(2, 6), metrics.Decision(2, 6, threshold=0.3),
               metrics.Decision(0, 7)]
  functions = {"kl": metrics.kl_divergence, "js": metrics.js_divergence,
               "tv": metrics.total_variation, "entropy": lambda p, q: metrics.entropy(p)}
  for name, f in functions.items():
    with jax.disable_jit():
      eager = f(p, q)
    np.testing.assert_allclose(eager, jax.jit(f)(p, q), rtol=1e-5, atol=1e-7, err_msg=name)
  for d in decisions:
    with jax.disable_jit():
      eager = (d.predict(logits), d.correct(logits, gold))
    jitted = jax.jit(lambda l, g, d=d: (d.predict(l), d.correct(l, g)))(logits, gold)
    for a, b in zip(eager, jitted):
      np.testing.assert_array_equal(a, b)
