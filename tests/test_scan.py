"""The illusion scan: a planted illusion is flagged on the right split, in the right
direction and at the right bucket; a chance control lies below its family on a trained
model; the scan runs on the built-in, a Linen and an NNX model; the command writes its
report, figures and units, and reads finished units back."""

import json
import os

import jax
import numpy as np
import pytest

import proxies
from experiments import aggregate, scan as scan_command
from pipeline import api, scan, tasks
from proxies import results
from tests import test_own_model as own
from tests.tiny import ROOT, run as run_python


def test_areas_integrate_agreement_over_the_log_sized_sweep():
  assert scan.area(np.array([[0.5, 1.0]]), [1, 64]) == pytest.approx([0.75])
  # Evenly spaced in log2: 1, 2, 4 -> 0, 0.5, 1; a trapezoid per step.
  assert scan.area(np.array([0.0, 1.0, 1.0]), [1, 2, 4]) == pytest.approx(0.75)
  assert scan.area(np.array([0.3]), []) == pytest.approx(0.3)  # no sweep: the value


GRID = tasks.Breakdown("depth", "distance", "cells")
SIZES = {"depth": ["0", "1", "2"], "distance": ["near", "far"]}


def _planted(n=60, seed=0):
  """Two splits of n strings, 4 scored positions each, one setting. In distribution the
  proxy agrees everywhere; out of it, it agrees everywhere but at depth 2 (never seen in
  distribution, where it agrees at 0.2 and the model is right), at 'far' cells only.
  Cells: depth * 2 + distance."""
  rng = np.random.default_rng(seed)
  cells_iid = np.zeros((n, 6))
  cells_iid[:, [0, 1, 2, 3]] = 1  # depths 0-1, both distances
  cells_ood = np.zeros((n, 6))
  cells_ood[:, [0, 3, 5]] = 1
  cells_ood[:, 5] += 1  # two positions at depth 2, far
  agree_ood = cells_ood.copy()
  agree_ood[:, 5] = rng.binomial(2, 0.2, n)  # [N]
  def split(cells, agree, correct_proxy):
    n_seq = cells.sum(1)
    seq = {"n_scored": n_seq, "n_query": n_seq, "correct_model": n_seq,
           "nll_model": np.zeros(n), "agree": agree.sum(1)[None],
           "correct_proxy": correct_proxy[None], "both_wrong": np.zeros((1, n)),
           "tv": (n_seq - agree.sum(1))[None] * 0.5, "kl": np.zeros((1, n)),
           "attention_jsd": np.zeros((1, n))}
    return results.SplitResult(seq, {}, {"cells": {"n_scored": cells, "agree": agree[None]}})
  ood_correct = agree_ood.sum(1)  # the proxy is right only where it agrees
  return (split(cells_iid, cells_iid, cells_iid.sum(1)),
          split(cells_ood, agree_ood, ood_correct))


def _rows(result, split, seed=0):
  return [{"split": split, **s, **b} for s, b in zip(result.summary(),
                                                      result.bootstrap(500, seed))]


def test_a_planted_illusion_is_flagged_with_its_split_direction_and_bucket():
  iid, ood = _planted()
  spec = proxies.ProxySpec("onehot", ((1, 0),), ("pattern",))
  unit = scan.Unit("onehot", "proxy", spec)
  found = scan.read(unit, {"iid": iid, "deep": ood, "also_fine": iid},
                    _rows(iid, "iid") + _rows(ood, "deep") + _rows(iid, "also_fine"),
                    settings=1, in_distribution="iid", breakdown=GRID, groups=SIZES,
                    clusters=lambda split: None, config=scan.ScanConfig(n_bootstrap=500))
  assert [f["split"] for f in found["flags"]] == ["deep"]  # not the split where it holds
  flagged = found["flags"][0]
  assert flagged["direction"] == "under-estimates"  # the proxy is wrong where the model is not
  where = flagged["breaks"]
  assert (where["group"], where["bucket"], where["matched_on"]) == ("depth", "2", "distance")
  # Matched on distance: in distribution 'far' agrees at 1.0, depth 2 at about 0.2.
  assert 0.6 < where["gap_lo"] <= where["gap"] <= where["gap_hi"] < 1.0
  assert where["coverage"] == 1.0 and where["n"] == 120
  assert found["areas"]["deep"]["gap"] > 0.2 and found["areas"]["also_fine"]["gap"] == 0.0


def test_a_setting_unfaithful_in_distribution_is_not_flagged():
  """A proxy that fails everywhere misleads no one about where it holds."""
  iid, ood = _planted(n=8)
  spec = proxies.ProxySpec("onehot", ((1, 0),), ("pattern",))
  found = scan.read(scan.Unit("onehot", "proxy", spec), {"iid": ood, "deep": ood},
                    _rows(ood, "iid") + _rows(ood, "deep"), settings=1,
                    in_distribution="iid", breakdown=GRID, groups=SIZES,
                    clusters=lambda split: None, config=scan.ScanConfig(n_bootstrap=200))
  assert found["flags"] == []


def test_a_setting_is_named_as_in_every_other_table():
  """The scan's rows and the experiments' tables name a sweep's values alike."""
  for kind, value in (("kmeans", 64), ("svd", 4), ("sae", 8), ("onehot", None)):
    assert scan.setting_label(kind, value) == aggregate.setting_label((kind, 1, value))
  assert aggregate.setting_label(("kmeans", 1, 64)) == "kmeans K 64"
  # A unit saved under another label is named as the current code names it.
  saved = {"role": "proxy", "family": "kmeans", "kind": "kmeans", "layer": 1, "head": 0,
           "flags": [{"split": "deep", "value": 64, "setting": "kmeans k 64"}]}
  assert scan.Scan(scan.ScanConfig(), [saved]).flags()[0]["setting"] == "kmeans K 64"


class _Task(own.Task):
  in_distribution = "a"


def _scan_of(run, **overrides):
  config = scan.ScanConfig(heads=((1, 0),), families=("svd", "kmeans"), n_fit=8, draws=2,
                           n_bootstrap=100, **overrides)
  return run.scan(config)


@pytest.mark.parametrize("which", ["builtin", "linen", "nnx"])
def test_the_scan_runs_on_any_site_model(which, monkeypatch):
  from models import transformer
  kinds = []  # compiled programs are dropped when the kind changes (a long scan runs out of
  monkeypatch.setattr(scan.jax, "clear_caches", lambda: kinds.append("cleared"))  # mappings)
  monkeypatch.setattr(scan, "measure", lambda *a, _measure=scan.measure: (
      kinds.append(a[3].spec.kind), _measure(*a))[1])
  params = transformer.init_params(own.CFG, seed=0)
  if which == "builtin":
    run = api.Run(_Task(), own.CFG, params)
  elif which == "linen":
    run = api.Run(_Task(), own.user_model(own.ALL_SITES), own.user_params(params))
  else:
    from tests import test_nnx_model as nnx_test
    run = api.Run(_Task(), *nnx_test.user_model(params))
  found = _scan_of(run)
  roles = sorted((u["family"], u["role"]) for u in found.units)
  assert roles == sorted([("svd", "proxy"), ("svd", "chance"), ("svd", "chance"),
                          ("kmeans", "proxy"), ("kmeans", "chance"), ("kmeans", "chance")])
  chance = [u for u in found.units if u["role"] == "chance" and u["family"] == "svd"]
  assert chance[0]["kind"] == "random_subspace" and chance[0]["options"]["seed"] == 0
  assert chance[1]["options"]["seed"] == 1  # another draw
  (svd_row,) = [h for h in found.headline() if h["family"] == "svd"]
  assert svd_row["values"] == [1, 2, 4, 8] and svd_row["chance_draws"] == 2
  assert kinds == ["svd", "cleared", "random_subspace", "random_subspace",
                   "cleared", "kmeans", "cleared", "random_centroids", "random_centroids"]


def test_on_a_trained_model_the_chance_control_lies_below_its_family(trained, tmp_path):
  _, run_dir = trained
  run = api.load_run(str(run_dir))
  config = scan.ScanConfig(heads=((1, 0),), families=("svd",), splits=("iid", "unseen_depth"),
                           n_fit=100, draws=3, n_bootstrap=200)
  found = run.scan(config, out_dir=str(tmp_path / "scan"), log=lambda m: None)
  proxy = next(u for u in found.units if u["role"] == "proxy")
  chance = [u for u in found.units if u["role"] == "chance"]
  assert len(chance) == 3 and {u["kind"] for u in chance} == {"random_subspace"}
  for split in ("iid", "unseen_depth"):
    mean_chance = np.mean([u["areas"][split]["area"] for u in chance])
    assert proxy["areas"][split]["area"] > mean_chance + 0.02, split
  # Fitted on val_depth too: the fitting-distribution control of a data-fitted family.
  assert [u["fit_split"] for u in found.units if u["role"] == "fit_split"] == ["val_depth"]
  # A rerun reads every unit back and computes nothing.
  logged = []
  again = run.scan(config, out_dir=str(tmp_path / "scan"), log=logged.append)
  assert all("read back" in m for m in logged) and again.units == found.units


def test_the_command_writes_the_report_and_figures(trained, tmp_path, capsys):
  _, run_dir = trained
  out = tmp_path / "scan"
  scan_command.main([f"--run={run_dir}", f"--out={out}", "--heads=1.0",
                     "--families=svd,onehot", "--splits=iid,unseen_depth", "--n_fit=50",
                     "--draws=1", "--n_bootstrap=100"])
  text = (out / "report.md").read_text()
  for heading in ("## Headline", "## Flags", "## Areas by split", "## Figures"):
    assert heading in text
  assert "random_subspace, 1 draws" in text and "(val_depth)" in text
  # Where each unit was measured is recorded, so a scan resumed on another machine says so.
  units = [json.loads(p.read_text()) for p in (out / "units").glob("*.json")]
  assert {u["device"] for u in units} == {jax.devices()[0].device_kind}
  assert f"measured on {jax.devices()[0].device_kind}: {len(units)} evaluation(s)" in text
  report = json.loads((out / "report.json").read_text())
  assert {h["family"] for h in report["headline"]} == {"svd", "onehot"}
  for name in ("heatmap.png", "curves_layer1_head0.png"):
    assert (out / "figures" / name).read_bytes()[:4] == b"\x89PNG"
  assert "flagged setting(s)" in capsys.readouterr().out


def test_bad_scan_requests_are_errors_before_anything_runs(trained):
  _, run_dir = trained
  from experiments import cli
  with pytest.raises(cli.UsageError, match="--heads=1:0"):
    scan_command.main([f"--run={run_dir}", "--heads=1:0"])
  with pytest.raises(ValueError, match="unknown family 'random_subspace'"):
    scan_command.main([f"--run={run_dir}", "--families=random_subspace"])
  with pytest.raises(ValueError, match="no head"):
    scan_command.main([f"--run={run_dir}", "--heads=5.0"])
  with pytest.raises(ValueError, match="faithful=1.5 is out of range"):
    scan_command.main([f"--run={run_dir}", "--faithful=1.5"])


def test_the_scan_benchmark_prints_its_ratio(trained):
  cwd, run_dir = trained
  done = run_python(os.path.join(ROOT, "bench", "dyck_bench.py"), "--part=scan",
                    f"--run={run_dir}", "--families=svd", "--heads=1.0",
                    "--splits=iid,unseen_depth", "--draws=1", cwd=cwd)
  assert done.returncode == 0, done.stderr
  assert "scan: 3 evaluations (svd; controls included) in one process" in done.stdout
  assert "as 3 evaluate.py processes" in done.stdout and "x (cpu" in done.stdout.lower()
