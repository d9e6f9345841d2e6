"""experiments.depth_generalization: the model's accuracy by key depth, per run."""

import json

import pytest

from experiments import depth_generalization
from pipeline import api


def test_depth_numbers_equal_the_evaluations_strata(trained, capsys):
  _, run_dir = trained
  found = depth_generalization.measure(str(run_dir))
  m = found["m"]
  rows = {r["split"]: r for r in api.load_run(str(run_dir)).evaluate(
      api.load_run(str(run_dir)).fit("onehot"), splits=["iid", "unseen_depth"]).rows}
  assert found["iid <= m-1"] == pytest.approx(rows["iid"]["accuracy_model_shallow"])
  deepest = max(int(d) for d, (_, n) in found["by_depth"].items() if n)
  both = found[f"unseen_depth {m + 1}-{m + 3}"], found[f"unseen_depth {m + 4}-{deepest}"]
  n = found[f"n {m + 1}-{m + 3}"], found[f"n {m + 4}-{deepest}"]
  pooled = sum((a or 0.0) * k for a, k in zip(both, n)) / sum(n)  # an empty range: None
  assert pooled == pytest.approx(rows["unseen_depth"]["accuracy_model_deep"])
  assert sum(n) == rows["unseen_depth"]["n_deep"]
  assert [step for step, _, _ in found["curve"]] == [10, 20, 30]
  depth_generalization.main([f"--runs={run_dir}"])
  assert "deep_accuracy while training" in capsys.readouterr().out
  written = json.loads((run_dir / "eval" / "depth_generalization.json").read_text())
  assert written["steps"] == 30
