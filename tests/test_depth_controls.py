"""The deconfounded depth analysis: the gap's depth and length/span parts, the gap at equal
model confidence, the margin group, the fitting-split control and the checkpoint study."""

import json

import jax
import numpy as np
import pytest

import proxies
from experiments import checkpoint_study, depth_controls
from models import checkpoints, training, transformer
from pipeline import confidence, errors, evaluation, tasks
from proxies import metrics


def _row(seed, split, bucket, n, agreement, group=depth_controls.CELLS, rank=4):
  return {"model_seed": seed, "proxy": "svd", "layer": 1, "rank": rank, "split": split,
          "group": group, "bucket": bucket, "n": n, "agreement": agreement,
          "accuracy_model": 0.9, "accuracy_proxy": agreement}


def _planted(depth_matters: bool) -> list[dict]:
  """Deep closes far from their opens in long strings agree 0.5; iid closes (near, short)
  agree 0.9; shallow closes as far and as long agree 0.5 when only distance matters, 0.9
  when only depth does."""
  far = 0.9 if depth_matters else 0.5
  rows = []
  for seed in (0, 1, 2):
    wobble = 0.01 * seed
    rows += [_row(seed, "iid", "3 / 10-19 / 16-31", 400, 0.9 + wobble),
             _row(seed, "unseen_depth", "12 / 40-79 / 96-111", 100, 0.5 + wobble),
             _row(seed, "unseen_depth", "13 / 80+ / 112+", 50, 0.5 + wobble),
             _row(seed, "long_shallow", "8 / 40-79 / 96-111", 300, far + wobble),
             _row(seed, "unseen_depth", "7 / 80+ / 112+", 30, far + wobble)]
  return rows


def test_a_gap_of_distance_alone_has_no_depth_part():
  found = depth_controls.decomposition(_planted(depth_matters=False), train_depth=10)
  (s, d), = found.items()
  assert s == ("svd", 1, 4)
  assert d["agreement total"][0] == pytest.approx(0.4)
  assert d["agreement matched"][0] == pytest.approx(0.0, abs=1e-12)
  assert d["agreement rest"][0] == pytest.approx(0.4)
  assert d["coverage"][0] == pytest.approx(1.0)


def test_a_gap_of_depth_alone_is_all_depth():
  d = depth_controls.decomposition(_planted(depth_matters=True), train_depth=10)[("svd", 1, 4)]
  assert d["agreement matched"][0] == pytest.approx(0.4)
  assert d["agreement rest"][0] == pytest.approx(0.0, abs=1e-12)


def test_deep_closes_without_a_shallow_reference_drop_out():
  rows = [r for r in _planted(True) if r["bucket"] != "7 / 80+ / 112+"]
  d = depth_controls.decomposition(rows, train_depth=10)[("svd", 1, 4)]
  assert d["coverage"][0] == pytest.approx(100 / 150)
  assert d["agreement matched"][0] == pytest.approx(0.4)  # the 80+ cell is left out


def test_the_gap_at_equal_margin_removes_what_confidence_explains():
  """A proxy that agrees 0.99 where the model is sure and 0.6 where it is not, the same in
  and out of distribution: OOD has more unsure positions, so a pooled gap, but none at
  equal margin."""
  rows = []
  for seed in (0, 1):
    rows += [_row(seed, "iid", "0.9-1", 900, 0.99, "margin"),
             _row(seed, "iid", "0-0.1", 100, 0.6, "margin"),
             _row(seed, "unseen_depth", "0.9-1", 500, 0.99, "margin"),
             _row(seed, "unseen_depth", "0-0.1", 500, 0.6, "margin")]
  d = depth_controls.margin_matched(rows, ["unseen_depth"])[(("svd", 1, 4), "unseen_depth")]
  assert d["raw"][0] == pytest.approx(0.951 - 0.795)
  assert d["matched"][0] == pytest.approx(0.0, abs=1e-12)


def test_margins_are_the_top_two_probabilities_apart(params, inputs):
  from tests.tiny import CFG, PAD
  model = transformer.TransformerSites(CFG)
  decision = metrics.Decision(2, 7)
  got = confidence.margins(model, params, {"inputs": inputs, "scored": inputs != PAD},
                           decision, PAD, batch_size=8)
  logits = np.asarray(transformer.Transformer(CFG).apply({"params": params}, inputs))
  z = logits[..., 2:7]
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  top = np.sort(p, -1)
  used = inputs != PAD
  np.testing.assert_allclose(got[used], (top[..., -1] - top[..., -2])[used], atol=1e-5)
  b = confidence.buckets(got)
  assert b.min() >= 0 and b.max() < len(confidence.LABELS)


def test_proxies_fit_on_the_split_asked_for(trained):
  _, run_dir = trained
  task, cfg, params = tasks.load_trained(str(run_dir))
  spec = proxies.ProxySpec("svd", ((1, 0),), ("q", "k"), (2,), (("centered", False),))
  on_train = evaluation.fit_proxy(task, cfg, params, spec, 24)
  on_deep = evaluation.fit_proxy(task, cfg, params, spec, 24, fit_split="val_depth")
  a, b = _flat(on_train), _flat(on_deep)
  assert a.shape == b.shape and not np.allclose(a, b)
  with pytest.raises(errors.RunError, match="fit_split"):
    evaluation.fit_proxy(task, cfg, params, spec, 24, fit_split="nowhere")
  e = evaluation.evaluate(task, cfg, params, evaluation.EvalConfig(
      spec, ("iid",), n_fit=24, fit_split="val_depth", n_bootstrap=10))
  assert {r["fit_split"] for r in e.rows} == {"val_depth"}
  assert evaluation.file_stem(spec, "val_depth").endswith("_fit-val_depth")


def _flat(tree) -> np.ndarray:
  return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def test_any_kept_checkpoint_restores_and_a_missing_one_is_an_error(trained):
  _, run_dir = trained
  task, cfg, train_cfg = tasks.from_run_config(json.loads((run_dir / "config.json").read_text()),
                                               str(run_dir))
  first = training.restore_params(str(run_dir), cfg, train_cfg, step=10)
  last = training.restore_params(str(run_dir), cfg, train_cfg)
  assert not np.allclose(_flat(first), _flat(last))
  with pytest.raises(checkpoints.CheckpointError, match="no checkpoint at step 999"):
    training.restore_params(str(run_dir), cfg, train_cfg, step=999)


def test_the_checkpoint_study_chooses_on_validation_and_pairs_runs(trained, tmp_path):
  _, run_dir = trained
  out = tmp_path / "study"
  checkpoint_study.main([f"--runs={run_dir},{run_dir}", "--min_iid=0", f"--out={out}"])
  found = json.loads((out / "checkpoints.json").read_text())
  run = found["runs"][0]
  assert [c["step"] for c in run["checkpoints"]] == [10, 20, 30]
  g, d = run["chosen"]["generalizes"], run["chosen"]["does_not"]
  assert g["val_deep"] >= d["val_deep"]
  best = max(run["checkpoints"], key=lambda c: c["val_deep"])
  assert g["step"] == best["step"]
  assert {r["split"] for r in g["rows"]} == set(checkpoint_study.SPLITS)
  assert "difference" in (out / "checkpoints.md").read_text()


def test_choose_needs_two_checkpoints_that_qualify():
  checked = [{"step": 1, "val_iid": 0.5, "val_deep": 0.9},
             {"step": 2, "val_iid": 0.99, "val_deep": 0.3},
             {"step": 3, "val_iid": 0.985, "val_deep": 0.6}]
  g, d = checkpoint_study.choose(checked, 0.98)
  assert (g["step"], d["step"]) == (3, 2)  # step 1 generalizes most but fails val_iid
  assert checkpoint_study.choose(checked[:2], 0.98) is None
