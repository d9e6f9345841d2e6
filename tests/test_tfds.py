"""The TFDS builder writes array_record files that read back as the generated splits."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
from absl import logging as absl_logging

from data import dyck_splits, dyck_tfds
from tests import tiny

SMALL = dyck_splits.DyckConfig(n_types=3, max_depth=3, max_length=24, n_train=300, n_test=20,
                               short_length=12, ood_depth_cap=6, seed=1)


def test_builder_round_trip_and_manifest(tmp_path):
  loaded = dyck_tfds.load(SMALL, str(tmp_path))
  generated = dyck_splits.generate(SMALL)
  for name in dyck_splits.SPLITS:
    assert [s.tolist() for s in loaded[name]] == [s.tolist() for s in generated[name]], name
    assert all(s.dtype == np.int32 for s in loaded[name])

  b = dyck_tfds.builder(SMALL, str(tmp_path))
  files = os.listdir(b.data_dir)
  assert any(f.startswith("dyck-train.array_record") for f in files)
  with open(os.path.join(b.data_dir, "metadata.json")) as f:
    manifest = json.load(f)["manifest"]
  assert manifest["config"]["seed"] == 1 and manifest["config"]["max_depth"] == 3
  assert manifest["vocab"][:2] == ["(a", "(b"]
  stats = manifest["splits"]
  assert stats["train"]["count"] == 300 and stats["unseen_depth"]["depth"]["min"] > 3
  # Every unseen_depth string scores a close at key depth 4 (the one stratum for cap 6).
  assert stats["unseen_depth"]["scored_closes_by_key_depth"]["4"] >= 20
  assert max(map(int, stats["iid"]["scored_closes_by_key_depth"])) <= 2
  assert stats["unseen_struct_long"]["length"]["min"] > 12


def test_prepared_data_is_reused_not_regenerated(tmp_path):
  dyck_tfds.load(SMALL, str(tmp_path), ("iid",))
  b = dyck_tfds.builder(SMALL, str(tmp_path))
  stamp = os.path.getmtime(os.path.join(b.data_dir, "dataset_info.json"))
  again = dyck_tfds.load(SMALL, str(tmp_path), ("iid",))
  assert os.path.getmtime(os.path.join(b.data_dir, "dataset_info.json")) == stamp
  assert len(again["iid"]) == 20


def test_each_config_gets_its_own_directory(tmp_path):
  other = dyck_splits.DyckConfig(**{**SMALL.__dict__, "seed": 2})
  assert dyck_tfds.builder(SMALL, str(tmp_path)).data_dir != \
      dyck_tfds.builder(other, str(tmp_path)).data_dir


def test_importing_the_data_modules_leaves_absl_logging_alone():
  """Silencing TFDS used to set absl's verbosity for the whole process on import."""
  probe = ("from absl import logging\n"
           "before = logging.get_verbosity(), logging.get_absl_logger().level\n"
           "from data import tfds_io, dyck_tfds, code_tfds\n"
           "print(before == (logging.get_verbosity(), logging.get_absl_logger().level))\n")
  result = subprocess.run([sys.executable, "-c", probe], env=tiny.env(), capture_output=True,
                          text=True, timeout=300)
  assert result.stdout.strip() == "True", result.stderr[-2000:]


def test_preparing_is_quiet_and_restores_the_absl_level(tmp_path, caplog):
  logger = absl_logging.get_absl_logger()
  previous = logger.level
  logger.setLevel(logging.INFO)
  try:
    with caplog.at_level(logging.INFO):
      dyck_tfds.load(SMALL, str(tmp_path))  # generates: TFDS narrates at INFO and WARNING
      assert not [r for r in caplog.records if r.name == "absl"]
      assert logger.level == logging.INFO
      absl_logging.info("after TFDS")
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == ["after TFDS"]
  finally:
    logger.setLevel(previous)
