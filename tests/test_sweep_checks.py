"""A proxy kind owns its checks (`ProxyKind.bounds` and `checks`, declared where it is
registered) and they hold wherever a sweep is made: a sweep the model cannot run as
labelled (a rank wider than the head, K above the fitting vectors, a site the model does
not expose) is an error before anything runs, through the API and the command line alike.
And one config (`evaluation.EvalConfig`) carries every setting, `fit_split` included."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

import proxies
from models import transformer
from models.sites import Site
from pipeline import api, errors
from tests import test_own_model as own
from tests.tiny import ROOT, run

# The default model's widths (64-wide heads) on the small task of tests/test_own_model.py.
DEFAULT = transformer.ModelConfig(vocab_size=own.CFG.vocab_size, seq_len=own.CFG.seq_len)


def test_a_rank_above_the_default_head_width_is_an_error_through_the_api():
  """Accepted before (rows labelled rank 100 of a full-rank projector); now refused before
  anything runs: the run has no parameters to run with."""
  r = api.Run(own.Task(), DEFAULT, params=None)
  narrow = r"\(q, the narrowest site simplified, has 64 dimensions\); choose 1..64"
  with pytest.raises(proxies.ProxyError, match=rf"rank=100 is out of range {narrow}"):
    r.fit("svd", [100])
  with pytest.raises(proxies.ProxyError, match="rank=65 is out of range"):
    r.fit("weight_svd", [4, 65])
  with pytest.raises(proxies.ProxyError, match="rank=0 is out of range"):
    r.fit("svd", [0])
  # A stream wider than the head: a separate fit of q and resid_pre stays within q's.
  wide = api.Run(r.task, dataclasses.replace(DEFAULT, d_model=128), params=None)
  with pytest.raises(proxies.ProxyError, match=rf"rank=65 is out of range {narrow}"):
    wide.fit("svd", [65], sites=["q", "resid_pre"], separate=True)
  with pytest.raises(proxies.ProxyError, match="a joint svd fit needs sites of one width"):
    wide.fit("svd", [4], sites=["q", "resid_pre"])


def test_k_is_bounded_by_the_kind_and_by_the_fitting_vectors():
  r = api.Run(own.Task(), DEFAULT, params=None)
  with pytest.raises(proxies.ProxyError, match="k=5000 is out of range; choose 1..1024"):
    proxies.make_spec(r.model, "kmeans", [5000])  # k-means' own cap, vectors not yet known
  # 8 strings of 16 tokens: 128 vectors a site, 256 for queries and keys clustered jointly.
  with pytest.raises(proxies.ProxyError, match=r"\(256 vectors to fit on\); choose 1..256"):
    r.fit("kmeans", [300], n_fit=8)
  with pytest.raises(proxies.ProxyError, match=r"\(128 vectors to fit on\); choose 1..128"):
    r.fit("kmeans", [200], n_fit=8, separate=True)
  with pytest.raises(proxies.ProxyError, match="k=300 is out of range .the dictionary's 256"):
    r.fit("sae", [300])
  with pytest.raises(proxies.ProxyError, match="onehot has no sweep"):
    r.fit("onehot", [3])


def test_onehot_on_a_model_without_a_pattern_site_is_an_error_not_agreement_one():
  """Attention computed inline (no submodule for the pattern): the proxy could never be
  applied, and the engine would report a perfectly faithful proxy. Refused, naming the
  sites the model has, both when fitting and when a fit made elsewhere is evaluated."""
  task = own.Task()
  inline = {s: w for s, w in own.ALL_SITES.items() if s != Site.PATTERN}
  bare = api.Run(task, own.user_model(inline), own.user_params(transformer.init_params(
      own.CFG, seed=0)))
  exposes = "it exposes: resid_pre, q, k, v"
  with pytest.raises(proxies.ProxyError,
                     match=f"onehot simplifies pattern, which this model does not expose; "
                     f"{exposes}"):
    bare.fit("onehot")
  spec = proxies.ProxySpec("onehot", ((1, 0),), ("pattern",))
  made_elsewhere = api.Sweep(spec, proxies.fit(spec, [{}]))
  with pytest.raises(proxies.ProxyError, match=exposes):
    bare.evaluate(made_elsewhere)
  # Where the model exposes it, the same request runs.
  full = api.Run(task, own.user_model(own.ALL_SITES), bare.params)
  assert len(full.evaluate(full.fit("onehot"), splits=["a"], n_bootstrap=10).rows) == 1


def test_settings_are_the_configs_own():
  r = api.Run(own.Task(), DEFAULT, params=None)
  with pytest.raises(errors.RunError, match="no setting colour"):
    api.plan(r.task, r.model, "svd", [2], colour="red")
  with pytest.raises(errors.RunError, match="n_fit=99 is out of range"):
    r.fit("svd", [2], n_fit=99)
  with pytest.raises(errors.RunError, match="unknown fit_split 'nowhere'"):
    r.fit("svd", [2], fit_split="nowhere")
  config = api.plan(r.task, r.model, "svd", [2], n_bootstrap=10)
  assert (config.splits, config.scoring, config.n_fit, config.n_bootstrap) == (
      ("a", "b"), "all", 16, 10)  # the task's splits and scoring, all 16 training strings


def test_fit_split_through_the_api(trained):
  r = api.load_run(str(trained[1]))
  sweep = r.fit("svd", [2], fit_split="val_depth", n_fit=20)
  assert (sweep.n_fit, sweep.fit_split) == (20, "val_depth")
  rows = r.evaluate(sweep, ["iid"], n_bootstrap=10).rows
  assert [(row["fit_split"], row["n_fit"]) for row in rows] == [("val_depth", 20)]
  train_sweep = r.fit("svd", [2], n_fit=20)
  assert r.evaluate(train_sweep, ["iid"], n_bootstrap=10).rows[0]["fit_split"] == "train"
  deep, shallow = sweep.proxy.arrays[0]["projector_q"], train_sweep.proxy.arrays[0]["projector_q"]
  assert deep.shape == shallow.shape and not np.allclose(deep, shallow)  # another basis


def _one_line_error(result) -> str:
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  return lines[0]


def test_the_command_line_refuses_the_same_and_takes_fit_split(trained, tmp_path):
  cwd, run_dir = trained
  # The tiny run made 64 wide: every check comes before its checkpoint is read.
  shutil.copytree(cwd / "runs", tmp_path / "runs")
  wide = tmp_path / "runs" / run_dir.name
  config = json.loads((wide / "config.json").read_text())
  config["model"].update(d_model=64, d_head=64, d_mlp=256)
  (wide / "config.json").write_text(json.dumps(config))
  evaluate = os.path.join(ROOT, "evaluate.py")
  line = _one_line_error(run(evaluate, f"--run={wide}", "--rank=100", cwd=tmp_path))
  assert line.endswith("rank=100 is out of range (q, the narrowest site simplified, has 64 "
                       "dimensions); choose 1..64")
  assert "rank" not in _one_line_error(run(evaluate, f"--run={wide}", "--rank=64", cwd=tmp_path))
  # fit_split: validated, for data-fitted kinds, and said in the rows and the file name.
  assert "unknown fit_split 'nope'" in _one_line_error(
      run(evaluate, f"--run={run_dir}", "--fit_split=nope", cwd=cwd))
  assert "--fit_split does not apply to onehot" in _one_line_error(
      run(evaluate, f"--run={run_dir}", "--proxy=onehot", "--fit_split=iid", cwd=cwd))
  done = run(evaluate, f"--run={run_dir}", "--rank=2", "--splits=iid", "--fit_split=val_depth",
             "--n_fit=20", "--n_bootstrap=10", cwd=cwd)
  assert done.returncode == 0, done.stderr
  assert "fitted on 20 val_depth strings" in done.stdout
  rows = json.loads((run_dir / "eval" / "svd_layer1_head0_q+k_2_fit-val_depth.json").read_text())
  assert [(r["split"], r["fit_split"], r["rank"]) for r in rows] == [("iid", "val_depth", 2)]
