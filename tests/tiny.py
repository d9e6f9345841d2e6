"""The tiny Dyck setting the command-line tests share: flags, the same as a config, helpers."""

import os
import subprocess
import sys

from data import dyck_splits
from models import transformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = dyck_splits.DyckConfig(n_types=4, max_depth=4, max_length=30, n_train=400, n_test=24,
                              short_length=14, ood_depth_cap=8)
DATA_FLAGS = [f"--types={DATA.n_types}", f"--depth={DATA.max_depth}",
              f"--max_length={DATA.max_length}", f"--n_train={DATA.n_train}",
              f"--n_test={DATA.n_test}", f"--short_length={DATA.short_length}",
              f"--ood_depth_cap={DATA.ood_depth_cap}"]
MODEL = {"d_model": 16, "d_head": 8, "d_mlp": 32}
# The small model the unit tests run (two layers of two heads; tokens 0..9, PAD 10).
CFG = transformer.ModelConfig(vocab_size=11, seq_len=12, n_layers=2, n_heads=2, d_model=16,
                              d_head=8, d_mlp=32)
PAD = 10
MODEL_FLAGS = [f"--{k}={v}" for k, v in MODEL.items()]


def env() -> dict:
  return {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}


def run(*args, cwd) -> subprocess.CompletedProcess:
  """Runs `python *args` in `cwd` and waits (10 minutes at most)."""
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env(), capture_output=True,
                        text=True, timeout=600)
