"""One training loop for every task: a pure step jitted once per batch shape, resumable.

The task supplies `batches(step) -> {'inputs', 'targets'}` (a function of the step alone, so
a resumed run sees the same data as an uninterrupted one) and `evaluate(params) -> dict`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
import tqdm

from models import atomic, checkpoints, mesh as mesh_lib, transformer


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int = 8000  # reaches >= 98 % iid accuracy on Dyck-(20, 10) (see README)
  batch_size: int = 64
  learning_rate: float = 3e-3
  warmup_steps: int = 200
  weight_decay: float = 0.01
  grad_clip: float = 1.0
  seed: int = 0
  log_every: int = 100
  eval_every: int = 1000
  checkpoint_every: int = 1000
  keep: int = 3  # checkpoints kept (the newest); 0: every one (a study of checkpoints)

  def __post_init__(self):
    for name, most in (("steps", 10**9), ("batch_size", 1 << 20), ("log_every", 10**9),
                       ("eval_every", 10**9), ("checkpoint_every", 10**9)):
      if not 1 <= getattr(self, name) <= most:
        raise ValueError(f"{name} must be in 1..{most}, got {getattr(self, name)}")
    finite = all(math.isfinite(v) for v in (self.learning_rate, self.weight_decay, self.grad_clip))
    if not (finite and self.learning_rate > 0 and self.grad_clip > 0 and self.weight_decay >= 0):
      raise ValueError("learning_rate and grad_clip must be finite and > 0, weight_decay >= 0")
    if not 0 <= self.seed < 2**32:
      raise ValueError(f"seed must be in 0..{2**32 - 1}, got {self.seed}")
    if not 0 <= self.keep <= 10**9:
      raise ValueError(f"keep must be in 0..{10**9} (0: every checkpoint), got {self.keep}")
    if not 0 <= self.warmup_steps <= 10**9:
      raise ValueError(f"warmup_steps must be in 0..{10**9}, got {self.warmup_steps}")


# TrainConfig fields that only say how often to log, evaluate and save: they do not change
# the trained parameters (a run killed at any moment resumes bitwise), so a resumed run may
# change them.
BOOKKEEPING = ("log_every", "eval_every", "checkpoint_every", "keep")


class TrainingError(Exception):
  pass


class Preempted(Exception):
  """SIGTERM arrived (what a TPU VM preemption sends); a checkpoint was saved first."""

  exit_code = 1  # a batch job reruns the command until it succeeds


class Interrupted(Preempted):
  """SIGINT arrived (Ctrl-C); a checkpoint was saved first, as for SIGTERM."""

  exit_code = 130  # 128 + SIGINT: what a shell reports for a program stopped by Ctrl-C


def _forget_after(metrics_path: str, step: int) -> None:
  """Drops logged rows past `step`: a resumed run logs those steps again."""
  if not os.path.exists(metrics_path):
    return
  with open(metrics_path, encoding="utf-8") as f:
    lines = f.readlines()
  def logged_step(line: str) -> float:
    try:
      value = json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
      return math.inf  # a line cut short by a kill: dropped with the rest
    return value if isinstance(value, (int, float)) else math.inf

  keep = [line for line in lines if logged_step(line) <= step]
  if len(keep) != len(lines):
    atomic.write_text(metrics_path, "".join(keep))


def optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, cfg.learning_rate, cfg.warmup_steps, max(cfg.steps, cfg.warmup_steps + 1),
      end_value=cfg.learning_rate * 0.1)
  return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                     optax.adamw(schedule, weight_decay=cfg.weight_decay))


def loss_fn(model: transformer.Transformer, params, inputs_BxL, targets_BxL, pad_id: int):
  logits_BxLxV = model.apply({"params": params}, inputs_BxL)
  mask_BxL = (targets_BxL != pad_id).astype(jnp.float32)
  losses_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, targets_BxL)
  return (losses_BxL * mask_BxL).sum() / jnp.maximum(mask_BxL.sum(), 1.0)


def make_train_step(model_cfg: transformer.ModelConfig, tx: optax.GradientTransformation,
                    pad_id: int, mesh: jax.sharding.Mesh):
  """The pure step, jitted with the state replicated and the batch split over `mesh`: the
  loss is a mean over the global batch, so XLA all-reduces the gradients."""
  model = transformer.Transformer(model_cfg)

  def train_step(state, inputs_BxL, targets_BxL):
    loss, grads = jax.value_and_grad(
        lambda p: loss_fn(model, p, inputs_BxL, targets_BxL, pad_id))(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    return {"params": params, "opt_state": opt_state}, loss

  replicated, batch = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
  return jax.jit(train_step, in_shardings=(replicated, batch, batch),
                 out_shardings=(replicated, replicated), donate_argnums=0)


@contextlib.contextmanager
def _stop_signals():
  """A list that receives the signal when SIGTERM or SIGINT arrives, so that the loop
  finishes its step and saves before stopping: Ctrl-C would otherwise lose every step since
  the last checkpoint. A second SIGINT stops at once (KeyboardInterrupt, nothing saved), for
  a user who will not wait for the save. Handlers are installed on the main thread only;
  elsewhere both signals keep their default action."""
  caught: list[signal.Signals] = []

  def on_signal(signum, frame):
    if signum == signal.SIGINT and caught:
      raise KeyboardInterrupt
    caught.append(signal.Signals(signum))

  main = threading.current_thread() is threading.main_thread()
  previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)} \
      if main else {}
  try:
    yield caught
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


def initial_state(model_cfg: transformer.ModelConfig, cfg: TrainConfig,
                  mesh: jax.sharding.Mesh) -> dict:
  tx = optimizer(cfg)
  params = transformer.init_params(model_cfg, cfg.seed)
  return mesh_lib.replicate(mesh, {"params": params, "opt_state": tx.init(params)})


def train(model_cfg: transformer.ModelConfig, cfg: TrainConfig, run_dir: str, pad_id: int,
          batches: Callable[[int], dict], evaluate: Callable[[Any], dict],
          log: Callable[[str], None] = print,
          stop: Callable[[dict], bool] = lambda row: False,
          mesh: jax.sharding.Mesh | None = None, progress: bool = False) -> Any:
  """Trains to `cfg.steps` (or until `stop(row)` holds for a logged row), resuming from the
  newest good checkpoint in `run_dir`; returns the params (as numpy, on every process).

  Batch `step` is `batches(step)` and the state is restored exactly, so a run killed at any
  moment and rerun ends with the same parameters as one never interrupted. Batches are
  split over `mesh` (default: every device); only process 0 logs and writes metrics.
  `progress`: a bar over the steps, for callers that log nothing (on a terminal only)."""
  mesh = mesh or mesh_lib.data_mesh()
  mesh_lib.check_divisible(cfg.batch_size, mesh)
  main = mesh_lib.is_main()
  log = log if main else (lambda line: None)
  tx = optimizer(cfg)
  state = initial_state(model_cfg, cfg, mesh)
  ckpt = checkpoints.Checkpoints(run_dir, max_to_keep=cfg.keep or None)
  restored = ckpt.restore_latest(state)
  start = 0
  if restored is not None:
    start, state = restored
    log(f"resumed from step {start}")
  train_step = make_train_step(model_cfg, tx, pad_id, mesh)
  metrics_path = os.path.join(run_dir, "metrics.jsonl")
  if main:
    _forget_after(metrics_path, start)

  def record(row: dict) -> None:
    if main:
      with open(metrics_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")

  tokens, losses, clock = 0, [], time.perf_counter()
  bar = tqdm.tqdm(total=cfg.steps, initial=start, desc="training", unit=" step", leave=False,
                  disable=None if progress and main else True)
  with bar, _stop_signals() as caught:
    for step in range(start, cfg.steps):
      batch = batches(step)
      sharded = mesh_lib.shard_batch(mesh, {k: batch[k] for k in ("inputs", "targets")})
      state, loss = train_step(state, sharded["inputs"], sharded["targets"])
      losses.append(loss)  # stays on the device: no sync until the step is logged
      tokens += int((batch["targets"] != pad_id).sum())
      bar.update()
      done = step + 1
      stopping = False
      signalled = caught[0] if caught else None  # read once a step: a later one counts next
      saving = done % cfg.checkpoint_every == 0 or done == cfg.steps or signalled is not None
      if saving or done % cfg.log_every == 0:  # a checkpoint is only saved after a NaN check
        loss = float(jnp.mean(jnp.stack(losses)))  # mean over the steps since the last log
        if not math.isfinite(loss):
          ckpt.close()
          raise TrainingError(f"loss became {loss} by step {done}; the last good checkpoint "
                              f"is kept in {ckpt.directory}")
        elapsed = time.perf_counter() - clock
        row = {"step": done, "loss": round(loss, 5), "tokens_per_s": round(tokens / elapsed)}
        if done % cfg.eval_every == 0 or done == cfg.steps:
          row.update(evaluate(state["params"]))
        record(row)
        bar.set_postfix_str(f"loss {loss:.4f}")
        log("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in row.items()))
        tokens, losses, clock = 0, [], time.perf_counter()
        stopping = stop(row)
      if stopping or saving:
        ckpt.save(done, state)
      if signalled is not None:
        ckpt.close()
        stopped = Interrupted if signalled == signal.SIGINT else Preempted
        raise stopped(f"stopped by {signalled.name} after step {done}; its checkpoint is "
                      "saved: rerun the same command to resume")
      if stopping:
        break
  ckpt.close()
  return mesh_lib.to_host(state["params"])


def restore_params(run_dir: str, model_cfg: transformer.ModelConfig, cfg: TrainConfig,
                   mesh: jax.sharding.Mesh | None = None, step: int | None = None):
  """Parameters of the newest good checkpoint in `run_dir` (or of the one at `step`),
  replicated over `mesh`; None if there is none."""
  sharding = mesh_lib.replicated(mesh or mesh_lib.data_mesh())
  params = jax.eval_shape(lambda: transformer.init_params(model_cfg, cfg.seed))
  like = {"params": params, "opt_state": jax.eval_shape(optimizer(cfg).init, params)}
  like = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), like)
  ckpt = checkpoints.Checkpoints(run_dir, max_to_keep=None)  # reading removes nothing
  try:
    restored = ckpt.restore_latest(like) if step is None else ckpt.restore(step, like)
  finally:
    ckpt.close()
  return None if restored is None else restored[1]["params"]
