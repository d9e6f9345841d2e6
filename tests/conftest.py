"""Fixtures shared by the test modules: a tiny trained Dyck run, made once per session; and
the `slow` marker on end-to-end tests (`python -m pytest -m "not slow"`: the unit tests)."""

import os

import pytest

from tests.tiny import DATA_FLAGS, MODEL_FLAGS, ROOT, run

TINY_TRAIN = [*MODEL_FLAGS, "--steps=30", "--log_every=10", "--eval_every=10",
              "--checkpoint_every=10", "--batch_size=16"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
  """A tiny run trained by train.py in a working directory of its own: (cwd, run_dir).
  Tests that change it work on a copy."""
  cwd = tmp_path_factory.mktemp("work")
  result = run(os.path.join(ROOT, "train.py"), "--task=dyck", *DATA_FLAGS, *TINY_TRAIN,
               cwd=cwd)
  assert result.returncode == 0, result.stderr
  run_dir = cwd / "runs" / "dyck-k4-m4-s0"
  assert (run_dir / "config.json").exists()
  return cwd, run_dir


# Modules whose tests run the commands, train, or start processes.
END_TO_END = {"test_cli", "test_resume", "test_reproduce", "test_sharding", "test_api",
              "test_registry"}


def pytest_collection_modifyitems(items):
  for item in items:
    module = item.module.__name__.rsplit(".", 1)[-1]
    if module in END_TO_END or "trained" in getattr(item, "fixturenames", ()):
      item.add_marker(pytest.mark.slow)
