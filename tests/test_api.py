"""The Python API: what the README's block promises holds (tests/test_doc_blocks.py runs the
block itself)."""

import numpy as np
import pytest

from pipeline import api


def test_fit_and_evaluate_on_a_run(trained, tmp_path):
  _, run_dir = trained
  r = api.load_run(str(run_dir))
  both = r.fit("svd", [2, 8], heads=[(0, 0), (1, 0)])
  one = r.fit("svd", [2, 8], heads=[(1, 0)])
  a, b = r.evaluate(both, splits=["iid"]), r.evaluate(one, splits=["iid"])
  assert [row["layer"] for row in a.rows] == ["0+1", "0+1"] and b.rows[0]["layer"] == 1
  assert a.rows[1]["agreement"] == 1.0  # full rank (d_head 8) at both heads is the model
  assert a.rows[0]["agreement"] != b.rows[0]["agreement"]  # layer 0 simplified too
  depth = a.by("depth")
  assert {row["group"] for row in depth} == {"depth"} and depth
  with pytest.raises(ValueError, match="no group 'nope'"):
    a.by("nope")
  path = str(tmp_path / "saved")
  both.save(path)
  again = api.Sweep.load(path)
  assert again.spec == both.spec and again.n_fit == both.n_fit
  for x, y in zip(again.proxy.arrays, both.proxy.arrays):
    for name in x:
      np.testing.assert_array_equal(x[name], y[name])


def test_bad_requests_are_domain_errors(trained):
  import proxies

  r = api.load_run(str(trained[1]))
  with pytest.raises(proxies.ProxyError, match="unknown proxy kind 'pca'"):
    r.fit("pca", [2])
  with pytest.raises(proxies.ProxyError, match="no option colour"):
    r.fit("svd", [2], colour=True)
  with pytest.raises(proxies.ProxyError, match=r"no head \(2, 0\)"):
    r.fit("svd", [2], heads=[(2, 0)])
  with pytest.raises(proxies.ProxyError, match="does not apply to site 'pattern'"):
    r.fit("svd", [2], sites=["pattern"])
  with pytest.raises(ValueError, match="unknown split"):
    r.evaluate(r.fit("onehot"), splits=["nope"])
