"""The one-command reproduction in its smoke setting: runs, tables, figures, report, resume."""

import csv
import dataclasses
import json
import math

import pytest

import proxies
from data import dyck_splits
from experiments import aggregate, reproduce
from pipeline import confidence
from tests import tiny

SMOKE = reproduce.PLANS["smoke"]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
  """`python -m experiments.reproduce --setting=smoke`, written under a temporary folder."""
  out = tmp_path_factory.mktemp("reproduce")
  reproduce.main(["--setting=smoke", f"--out={out}", f"--data_dir={out / 'tfds'}"])
  return out


def test_every_seed_layer_proxy_and_split_is_evaluated(reproduced):
  rows = list(csv.DictReader(open(reproduced / "rows.csv")))
  seen = {(r["model_seed"], r["layer"], aggregate.family(r), r["split"]) for r in rows}
  # Every kind on each layer, k-means fitted separately too on the last, on every test split.
  test_splits = {r["split"] for r in rows}
  assert test_splits == set(dyck_splits.TEST_SPLITS)
  kinds = {k.name for k in proxies.KINDS.values() if k.control_of is None}  # no baselines
  assert len(seen) == len(SMOKE.seeds) * (2 * len(kinds) + 1) * len(test_splits)
  # Every registered kind, and k-means fitted separately too on the last.
  assert ({aggregate.family(r) for r in rows if r["layer"] == "1"}
          == kinds | {"kmeans separate"})
  assert {r.get("rank") or r.get("k") for r in rows if r["proxy"] == "svd"} == {"1", "2", "8"}
  # Full rank is the model itself, on every seed, layer and split.
  full = [r for r in rows if r["proxy"] == "svd" and r["rank"] == "8"]
  assert all(float(r["agreement"]) == 1.0 for r in full)
  groups = list(csv.DictReader(open(reproduced / "by_group.csv")))
  assert {g["group"] for g in groups} == {
      "depth", "distance", "depth_distance", "span_depth", "length", "position",
      "depth_distance_length", confidence.GROUP}
  deepest = max(int(g["bucket"]) for g in groups if g["group"] == "depth")
  assert deepest > SMOKE.data.max_depth  # unseen depth reaches past training


def test_figures_and_report_are_written(reproduced):
  names = sorted(p.name for p in (reproduced / "figures").iterdir())
  for layer in (0, 1):
    for figure in ("sweep", "accuracy_by_depth", "divergence_by_depth"):
      assert f"{figure}_layer{layer}.png" in names
  assert all((reproduced / "figures" / n).read_bytes()[:4] == b"\x89PNG" for n in names)
  text = (reproduced / "report.md").read_text()
  for heading in ("## The models", "## Faithfulness", "under- or over-estimate",
                  "explain the model's mistakes", "## Figures"):
    assert heading in text
  assert "gap " in text and "[" in text  # gaps with intervals over seeds


def test_the_mechanism_of_the_last_layer_is_measured_with_the_evaluated_fits(reproduced):
  run = next(reproduced.glob("dyck-*-s0"))
  found = json.loads((run / "eval" / "mechanism_layer1_head0.json").read_text())
  for site in ("q", "k"):
    v = found["variance"][site]
    assert 0 <= v["token"] <= 1 and 0 <= v["depth"] <= 1
    # The finer partition explains at least as much as either of its parts.
    assert v["depth x token"] >= max(v["token"], v["depth"]) - 1e-9
  kinds = {(r["proxy"], r.get("separate"), r.get("k")) for r in found["landing"]}
  assert kinds == {("model", None, None)} | {("kmeans", sep, k) for sep in (False, True)
                                             for k in SMOKE.ks}
  assert all(0 <= r["on_open"] <= r["at_depth"] + 1e-9 <= 1 + 1e-9 for r in found["landing"])
  assert "where k-means attention lands" in (reproduced / "report.md").read_text()


def test_rerun_reads_back_instead_of_recomputing(reproduced, capsys):
  reproduce.main(["--setting=smoke", f"--out={reproduced}", f"--data_dir={reproduced / 'tfds'}"])
  printed = capsys.readouterr().out
  assert "setting(s) x 5 splits" not in printed  # nothing evaluated again
  assert printed.count("iid accuracy") == len(SMOKE.seeds)


def test_plans_are_valid_and_reduced_has_three_seeds():
  assert list(reproduce.PLANS) == ["smoke", "reduced", "full"]
  assert len(reproduce.PLANS["reduced"].seeds) >= 3 and len(reproduce.PLANS["full"].seeds) >= 3
  for plan in reproduce.PLANS.values():
    assert dataclasses.replace(plan.train, seed=1).seed == 1


def test_a_sweep_over_depths_writes_one_report_per_depth(tmp_path):
  with pytest.MonkeyPatch.context() as m:
    # tiny.DATA: few enough training strings that depth 3 still has unseen structures.
    m.setitem(reproduce.PLANS, "tiny",
              dataclasses.replace(SMOKE, data=tiny.DATA, ks=(2,), ranks=(8,)))
    reproduce.main(["--setting=tiny", "--depths=3,4", "--seeds=5", f"--out={tmp_path}",
                    f"--data_dir={tmp_path / 'tfds'}"])
  for depth in (3, 4):
    text = (tmp_path / f"m{depth}" / "report.md").read_text()
    assert f"Dyck-(4, {depth})" in text and "seeds 5;" in text
    assert (tmp_path / f"m{depth}" / f"dyck-k4-m{depth}-s5" / "checkpoints").is_dir()


def test_intervals_over_seeds():
  """The smoke setting has one seed; the Student-t interval over several is checked here."""
  mean, lo, hi = aggregate.seed_interval([0.8, 0.9, 1.0, None])
  assert mean == pytest.approx(0.9)
  assert hi - mean == pytest.approx(mean - lo) == pytest.approx(4.3027 * 0.1 / math.sqrt(3),
                                                                rel=1e-4)
  assert aggregate.seed_interval([0.7]) == (0.7, 0.7, 0.7)
  assert all(math.isnan(v) for v in aggregate.seed_interval([]))


def test_an_impossible_depth_is_a_usage_error(tmp_path):
  from experiments import cli
  with pytest.raises(cli.UsageError, match="depth 0"):
    reproduce.main(["--depths=0", f"--out={tmp_path}"])
