"""The mechanism measurements: variance explained by labels, matching opens of closes."""

import numpy as np
import pytest

from data import dyck_splits
from experiments import mechanism
from pipeline import tasks


def test_explained_variance_is_one_when_labels_fix_the_vectors_and_zero_when_uninformative():
  rng = np.random.default_rng(0)
  labels_N = rng.integers(0, 5, 400)
  means_GxD = rng.normal(size=(5, 3))
  assert mechanism.explained(means_GxD[labels_N], labels_N) == pytest.approx(1.0)
  # One label for everything explains nothing.
  x_NxD = rng.normal(size=(400, 3))
  assert mechanism.explained(x_NxD, np.zeros(400, int)) == pytest.approx(0.0, abs=1e-12)


def test_explained_variance_matches_a_hand_computation():
  x_NxD = np.array([[0.0], [2.0], [10.0], [12.0]])
  # Group means 1 and 11: within-group sum of squares 4, total 104.
  assert mechanism.explained(x_NxD, np.array([0, 0, 1, 1])) == pytest.approx(1 - 4 / 104)
  # A finer partition never explains less.
  assert mechanism.explained(x_NxD, np.array([0, 1, 2, 2])) >= 1 - 4 / 104


def test_matching_opens_point_at_the_open_bracket_that_each_close_matches(tmp_path):
  cfg = dyck_splits.DyckConfig(n_types=4, max_depth=4, max_length=30, n_train=300, n_test=50,
                               short_length=14, ood_depth_cap=8)
  task = tasks.DyckTask(cfg, str(tmp_path))
  for split in ("iid", "unseen_depth"):
    a = task.eval_arrays(split, "all_closes")
    rows_n, cols_n, open_n = mechanism.matching_opens(task, split, a["scored"])
    assert len(rows_n) > 0
    inputs_NxL, k = a["inputs"], cfg.n_types
    # The key position holds an open of the type the gold close closes, at the same depth,
    # and every position between them stays deeper (the open is still unmatched there).
    assert (inputs_NxL[rows_n, open_n] == a["gold"][rows_n, cols_n] - k).all()
    assert (a["depth"][rows_n, open_n] == a["depth"][rows_n, cols_n]).all()
    for r, c, o in zip(rows_n[:200], cols_n[:200], open_n[:200]):
      assert (a["depth"][r, o:c + 1] >= a["depth"][r, c]).all()
