"""Fixtures shared by the test modules: a tiny trained Dyck run, made once per session; and
the `slow` marker on end-to-end tests (and on a few single tests that compile or fit for
many seconds, marked where they are): `python -m pytest -m "not slow"` runs the unit tests."""

import os

import numpy as np
import pytest

from models import transformer
from tests.tiny import CFG, DATA_FLAGS, MODEL_FLAGS, PAD, ROOT, run

TINY_TRAIN = [*MODEL_FLAGS, "--steps=30", "--log_every=10", "--eval_every=10",
              "--checkpoint_every=10", "--batch_size=16"]


@pytest.fixture(scope="session")
def params():
  """Parameters of the small model `tiny.CFG`, seed 0."""
  return transformer.init_params(CFG, seed=0)


@pytest.fixture(scope="session")
def inputs():
  """24 random token rows for `tiny.CFG`, every third padded after position 8."""
  x = np.random.default_rng(0).integers(0, PAD, (24, CFG.seq_len)).astype(np.int32)
  x[::3, 8:] = PAD
  return x


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
END_TO_END = {"test_cli", "test_bad_input", "test_resume", "test_reproduce", "test_sharding",
              "test_api", "test_registry"}


def pytest_collection_modifyitems(items):
  for item in items:
    module = item.module.__name__.rsplit(".", 1)[-1]
    if module in END_TO_END or "trained" in getattr(item, "fixturenames", ()):
      item.add_marker(pytest.mark.slow)
