"""The Python API: the README's block runs as written, and what it promises holds."""

import os
import re
import shutil

import numpy as np
import pytest

from pipeline import api
from tests.tiny import ROOT, run


def readme_block() -> str:
  text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  section = text.split("## Python API", 1)[1]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_block_runs_as_written(trained, tmp_path):
  """In a scratch folder whose runs/dyck-k20-m10-s0 is a tiny trained run: the block
  prints its rows, the second evaluation compiles nothing, a saved sweep reloads."""
  cwd, run_dir = trained
  shutil.copytree(cwd / "runs", tmp_path / "runs")
  shutil.copytree(run_dir, tmp_path / "runs" / "dyck-k20-m10-s0")
  script = tmp_path / "block.py"
  script.write_text(readme_block())
  result = run(str(script), cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert [line.split()[:2] for line in lines[:8]] == [
      [split, str(rank)] for split in ("iid", "unseen_depth") for rank in (1, 2, 4, 8)]
  first, second = re.search(r"(\d+) compilations; (\d+) for a second", result.stdout).groups()
  assert int(first) > 0 and int(second) == 0
  assert (tmp_path / "runs/dyck-k20-m10-s0/eval/svd_both_layers.npz").exists()


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
