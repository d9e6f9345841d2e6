"""The sparse-autoencoder proxy kind: a planted dictionary is recovered, seeds seed, apply
is the same with and without jit, fits round-trip through storage, and bad input is a
ProxyError."""

import jax
import numpy as np
import pytest

import proxies
from proxies import sae

OPTIONS = {**proxies.KINDS["sae"].options}


def _planted(n=6000, d=16, width=48, k=3, noise=0.01, seed=0):
  rng = np.random.default_rng(seed)
  atoms_WxD = rng.normal(size=(width, d))
  atoms_WxD /= np.linalg.norm(atoms_WxD, axis=1, keepdims=True)
  codes_NxW = np.zeros((n, width))
  for i in range(n):
    codes_NxW[i, rng.choice(width, k, replace=False)] = rng.uniform(1, 2, k)
  x_NxD = codes_NxW @ atoms_WxD + noise * rng.normal(size=(n, d))
  return x_NxD.astype(np.float32), atoms_WxD


@pytest.fixture(scope="module")
def planted_fit():
  x, atoms = _planted()
  options = {**OPTIONS, "width": 48, "steps": 1500}
  return x, atoms, options, sae.train(x, [3, 48], options)


def test_a_planted_sparse_dictionary_is_recovered(planted_fit):
  x, atoms_WxD, _, (p, dead) = planted_fit
  cos_WxW = np.abs(atoms_WxD @ p["w_dec"][0])
  assert (cos_WxW.max(1) >= 0.9).mean() >= 0.75  # most atoms found
  arrays = {f"{name}_q": v for name, v in p.items()}
  arrays["select_q"] = sae.selectors([3, 48])
  fvu = sae.fraction_unexplained(arrays, "q", x)
  assert fvu[0] < 0.25  # k = 3, the planted sparsity
  assert fvu[1] < 1e-2  # every latent active: almost exact
  assert np.all(dead <= 0.1)


def test_decoder_columns_have_unit_norm(planted_fit):
  p = planted_fit[3][0]
  np.testing.assert_allclose(np.linalg.norm(p["w_dec"], axis=1), 1.0, atol=1e-5)


def test_same_seed_same_fit_and_another_seed_another():
  x, _ = _planted(n=1000)
  options = {**OPTIONS, "width": 32, "steps": 50}
  a, b = sae.train(x, [2, 4], options)[0], sae.train(x, [2, 4], options)[0]
  c = sae.train(x, [2, 4], {**options, "seed": 1})[0]
  assert all(np.array_equal(a[name], b[name]) for name in a)
  assert not np.allclose(a["w_dec"], c["w_dec"])


def test_top_k_keeps_k_latents_whatever_the_k():
  pre = np.random.default_rng(0).normal(size=(20, 10)).astype(np.float32) + 3.0
  for k in (1, 4, 10):
    z = np.asarray(sae._top_k(pre, sae.selectors([k, 10])[0]))
    assert np.all((z > 0).sum(1) == k)
    np.testing.assert_allclose(z.max(1), pre.max(1))


def test_apply_is_the_same_with_and_without_jit_and_survives_storage(tmp_path):
  x, _ = _planted(n=2000)
  spec = proxies.ProxySpec("sae", ((0, 0),), ("q", "k"), (2, 8),
                           tuple({**OPTIONS, "width": 32, "steps": 40}.items()))
  proxy = proxies.fit(spec, [{"q": x[:1000], "k": x[1000:]}])
  x_BxLxD = x[:24].reshape(2, 12, 16)
  one = proxy.setting(1)
  eager = np.asarray(one((0, 0, "q"), x_BxLxD))
  jitted = np.asarray(jax.jit(lambda p, v: p((0, 0, "q"), v))(one, x_BxLxD))
  np.testing.assert_allclose(eager, jitted, atol=1e-5)
  proxies.save(str(tmp_path / "sae"), spec, proxy)
  spec2, proxy2, _ = proxies.load(str(tmp_path / "sae"))
  assert spec2 == spec
  np.testing.assert_array_equal(np.asarray(proxy2.setting(1)((0, 0, "q"), x_BxLxD)), eager)


def test_bad_input_is_a_proxy_error():
  x, _ = _planted(n=500)
  with pytest.raises(proxies.ProxyError, match="k must be in 1..width=32"):
    sae.train(x, [33], {**OPTIONS, "width": 32})
  with pytest.raises(proxies.ProxyError, match="width must be >= 1"):
    sae.train(x, [2], {**OPTIONS, "width": -1})
  with pytest.raises(proxies.ProxyError, match="does not apply to site 'pattern'"):
    proxies.ProxySpec("sae", ((0, 0),), ("pattern",), (2,))


def test_sae_evaluates_through_the_api_with_its_diagnostics(trained):
  from pipeline import api
  _, run_dir = trained
  run = api.load_run(str(run_dir))
  sweep = run.fit("sae", [1, 4], heads=[(1, 0)], width=16, steps=30)
  rows = run.evaluate(sweep, splits=["iid", "unseen_depth"], n_bootstrap=10).rows
  assert [(r["split"], r["k"]) for r in rows] == [("iid", 1), ("iid", 4),
                                                  ("unseen_depth", 1), ("unseen_depth", 4)]
  for r in rows:
    assert 0 <= r["fvu"] and 0 <= r["dead"] <= 1 and 0 < r["l0"] <= r["k"] + 1e-6
  by_k = {r["k"]: r for r in rows if r["split"] == "iid"}
  assert by_k[4]["fvu"] < by_k[1]["fvu"]  # more active latents, better reconstruction
