"""Training killed at any moment resumes to the same parameters; damaged checkpoints are
skipped; SIGTERM and Ctrl-C save; a NaN loss stops training with the last good checkpoint intact."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from pipeline import tasks
from models import checkpoints, training
from tests import tiny

MODEL = [*tiny.MODEL_FLAGS, "--batch_size=16", "--log_every=5", "--eval_every=40",
         "--checkpoint_every=5"]
STEPS = 120


def train_cmd(workdir, data_dir, steps=STEPS):
  return [sys.executable, os.path.join(tiny.ROOT, "train.py"), *tiny.DATA_FLAGS, *MODEL,
          f"--steps={steps}", f"--workdir={workdir}", f"--data_dir={data_dir}"]


env = tiny.env


def final_params(run_dir):
  task = tasks.DyckTask(tiny.DATA, "unused")
  model_cfg = task.model_config(**tiny.MODEL)
  cfg = training.TrainConfig(steps=STEPS, batch_size=16, log_every=5, eval_every=40,
                             checkpoint_every=5)
  return training.restore_params(str(run_dir), model_cfg, cfg)


def logged_step(run_dir) -> int:
  """The last step in metrics.jsonl (0 if none yet)."""
  try:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
  except FileNotFoundError:
    return 0
  steps = []
  for line in lines:
    try:
      steps.append(json.loads(line)["step"])
    except json.JSONDecodeError:  # a line cut short by a kill
      pass
  return max(steps, default=0)


def assert_bitwise_equal(a, b):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
    assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run: (data_dir, run_dir)."""
  base = tmp_path_factory.mktemp("resume")
  data_dir, run_dir = base / "tfds", base / "reference"
  result = subprocess.run(train_cmd(run_dir, data_dir), env=env(), capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  return data_dir, run_dir


def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(reference, tmp_path):
  data_dir, reference_dir = reference
  run_dir = tmp_path / "killed"
  rng = random.Random(0)
  kills, last = 0, 0
  for _ in range(8):
    proc = subprocess.Popen(train_cmd(run_dir, data_dir), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    # Let it make progress past the last kill (however slow the machine), then kill it at a
    # random moment: mid-step, mid-checkpoint or mid-log. The moment is drawn within two
    # logging intervals of this run, timed as it goes, so that a kill lands a few steps on
    # whatever the machine's speed (a fixed delay let a fast machine finish in 4 kills).
    deadline = time.time() + 300

    def wait_past(step):
      while logged_step(run_dir) <= step and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)

    wait_past(last)
    start, seen = time.time(), logged_step(run_dir)
    wait_past(seen)
    time.sleep(rng.uniform(0.0, 2 * (time.time() - start)))
    if proc.poll() is not None:  # finished before the kill
      assert proc.returncode == 0, proc.stderr.read()
      break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills += 1
    last = logged_step(run_dir)
    if last >= STEPS:  # killed after its last step was logged (mid final checkpoint or
      break            # final evaluation): a legitimate moment too; nothing left to wait for
  assert kills >= 5, f"only {kills} kills landed before the run finished"
  final = subprocess.run(train_cmd(run_dir, data_dir), env=env(), capture_output=True,
                         text=True, timeout=600)
  assert final.returncode == 0, final.stderr
  assert_bitwise_equal(final_params(run_dir), final_params(reference_dir))
  steps = [json.loads(line)["step"]
           for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert steps == sorted(set(steps)), "a resumed run logged a step twice"


def test_damaged_latest_checkpoint_is_reported_and_skipped(reference, tmp_path):
  data_dir, reference_dir = reference
  run_dir = tmp_path / "damaged"
  first = subprocess.run(train_cmd(run_dir, data_dir, steps=STEPS), env=env(),
                         capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stderr
  latest = run_dir / "checkpoints" / str(STEPS)
  data_files = [os.path.join(r, f) for r, _, fs in os.walk(latest) for f in fs
                if os.sep + "d" + os.sep in os.path.join(r, f)]
  with open(data_files[0], "r+b") as f:  # truncate one array file
    f.truncate(max(0, os.path.getsize(data_files[0]) // 2))
  rerun = subprocess.run(train_cmd(run_dir, data_dir, steps=STEPS), env=env(),
                         capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr
  assert f"checkpoints/{STEPS} is damaged" in rerun.stderr
  assert f"resumed from step {STEPS - 5}" in rerun.stdout
  assert os.listdir(run_dir / "checkpoints.bad")[0].startswith(f"{STEPS}-")
  assert checkpoints.problem(str(latest)) is None  # rewritten whole
  assert_bitwise_equal(final_params(run_dir), final_params(reference_dir))


def test_checkpoint_without_digests_counts_as_interrupted(tmp_path):
  ckpt = checkpoints.Checkpoints(str(tmp_path))
  state = {"w": np.arange(4, dtype=np.float32)}
  ckpt.save(1, state)
  ckpt.save(2, {"w": state["w"] * 2})
  os.remove(tmp_path / "checkpoints" / "2" / checkpoints.INTEGRITY)
  step, restored = ckpt.restore_latest(state)
  assert step == 1 and restored["w"].tolist() == [0, 1, 2, 3]
  with pytest.raises(checkpoints.CheckpointError, match=r"float32\[4\] in the checkpoint"):
    ckpt.restore_latest({"w": np.zeros(5, np.float32)})
  ckpt.close()


def test_sigterm_saves_a_checkpoint_before_exit(reference, tmp_path):
  data_dir, _ = reference
  run_dir = tmp_path / "preempted"
  cmd = train_cmd(run_dir, data_dir, steps=100000)
  cmd[cmd.index("--checkpoint_every=5")] = "--checkpoint_every=100000"
  proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  deadline = time.time() + 120
  while not (run_dir / "metrics.jsonl").exists() and time.time() < deadline:
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 1
  assert len(err.strip().splitlines()) == 1 and "stopped by SIGTERM after step" in err
  step = int(err.split("after step ")[1].split(";")[0])
  assert checkpoints.problem(str(run_dir / "checkpoints" / str(step))) is None


def test_ctrl_c_saves_a_checkpoint_exits_130_and_resumes_from_it(tmp_path):
  """SIGINT is handled like SIGTERM, with the shell's status for Ctrl-C (it used to be a
  KeyboardInterrupt traceback that lost every step since the last checkpoint)."""
  run_dir = tmp_path / "interrupted"
  cmd = train_cmd(run_dir, tmp_path / "tfds", steps=100000)
  cmd[cmd.index("--checkpoint_every=5")] = "--checkpoint_every=100000"  # none but the last

  def interrupt(after: int) -> tuple[int, str]:
    """Starts training, sends SIGINT once a step past `after` is logged; (step, stdout)."""
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while logged_step(run_dir) <= after and proc.poll() is None and time.time() < deadline:
      time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert "stopped by SIGINT after step" in lines[0] and "saved" in lines[0], lines[0]
    return int(lines[0].split("after step ")[1].split(";")[0]), out

  first, _ = interrupt(0)
  ckpt = checkpoints.Checkpoints(str(run_dir))
  assert ckpt.steps() == [first]  # the interrupted step, though no checkpoint was due
  ckpt.close()
  assert checkpoints.problem(str(run_dir / "checkpoints" / str(first))) is None
  second, out = interrupt(first)
  assert f"resumed from step {first}" in out and second > first
  steps = [json.loads(line)["step"]
           for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  assert steps == sorted(set(steps)) and steps[-1] == second


def test_nan_loss_stops_with_the_last_good_checkpoint_intact(tmp_path):
  task = tasks.DyckTask(tiny.DATA, str(tmp_path / "tfds"))
  model_cfg = task.model_config(**tiny.MODEL)
  good = training.TrainConfig(steps=10, batch_size=8, log_every=5, checkpoint_every=5)
  batches = task.train_batches(8, 0)
  training.train(model_cfg, good, str(tmp_path), task.pad_id, batches, lambda p: {},
                 log=lambda line: None)
  exploding = training.TrainConfig(steps=40, batch_size=8, log_every=5, checkpoint_every=5,
                                   learning_rate=1e30, warmup_steps=0, grad_clip=1e30)
  with pytest.raises(training.TrainingError, match="loss became"):
    training.train(model_cfg, exploding, str(tmp_path), task.pad_id, batches, lambda p: {},
                   log=lambda line: None)
  ckpt = checkpoints.Checkpoints(str(tmp_path))
  assert ckpt.steps() == [5, 10]
  assert all(checkpoints.problem(str(tmp_path / "checkpoints" / str(s))) is None
             for s in (5, 10))
  ckpt.close()
