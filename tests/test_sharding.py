"""Training and evaluation over a device mesh give the results of one device: 8 host
devices in one process, and two processes joined by jax.distributed on localhost."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests import tiny


def worker(out, n_devices: int, host_devices: int, **env) -> subprocess.Popen:
  os.makedirs(out, exist_ok=True)
  env = {**tiny.env(), "XLA_FLAGS": f"--xla_force_host_platform_device_count={host_devices}",
         **env}
  return subprocess.Popen([sys.executable, "-m", "tests.sharded_worker", str(out),
                           str(n_devices)], cwd=tiny.ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def result(process: subprocess.Popen, out) -> dict:
  log, _ = process.communicate(timeout=600)
  assert process.returncode == 0, log[-3000:]
  with open(os.path.join(out, "result.json"), encoding="utf-8") as f:
    return json.load(f)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  out = tmp_path_factory.mktemp("one")
  return result(worker(out, 1, host_devices=8), out)


def assert_same_run(reference: dict, other: dict) -> None:
  for a, b in zip(reference["params"], other["params"]):
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5)
  assert len(reference["rows"]) == len(other["rows"]) == 6
  for r, s in zip(reference["rows"], other["rows"]):
    assert (r["split"], r["rank"]) == (s["split"], s["rank"])
    for key in ("accuracy_model", "accuracy_proxy", "agreement", "n"):
      assert r[key] == s[key], (r["split"], r["rank"], key)
    for key in ("attention_jsd", "tv", "kl"):
      assert s[key] == pytest.approx(r[key], rel=1e-4, abs=1e-6)
  assert other["restored_equals_trained"]


def test_eight_host_devices_give_the_one_device_results(one_device, tmp_path):
  eight = result(worker(tmp_path, 8, host_devices=8), tmp_path)
  assert (one_device["devices"], eight["devices"]) == (1, 8)
  assert_same_run(one_device, eight)
  # The sweep is still one program: one compilation per batch shape, none per setting.
  assert eight["compilations"] == eight["shapes"] <= 4


def test_two_processes_train_checkpoint_restore_and_evaluate(one_device, tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = {"JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2"}
  processes = [worker(tmp_path, 0, host_devices=2, JAX_PROCESS_ID=str(i), **env)
               for i in range(2)]
  logs = [p.communicate(timeout=600)[0] for p in processes]
  assert [p.returncode for p in processes] == [0, 0], "\n".join(log[-2000:] for log in logs)
  with open(tmp_path / "result.json", encoding="utf-8") as f:
    two = json.load(f)
  assert (two["processes"], two["devices"]) == (2, 4)
  assert_same_run(one_device, two)
  # Process 0 alone wrote the run's files: one metrics row per logged step.
  steps = [json.loads(line)["step"] for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert steps == [10, 20]
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["10", "20"]
