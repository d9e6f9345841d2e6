"""Training parts of the Dyck benchmarks (`dyck_bench.py` says what each measures): time to
accuracy, training throughput, and the bf16 training step's FLOP/s against the device's peak."""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np

from models import mesh, training, transformer
from pipeline import tasks


def time_to_accuracy(task, workdir: str, target: float, eval_every: int, steps: int | None):
  """Trains the default model (its schedule stretched to `steps` if given) until `target`."""
  model_cfg = task.model_config()
  cfg = training.TrainConfig(eval_every=eval_every, log_every=eval_every)
  if steps is not None:
    cfg = dataclasses.replace(cfg, steps=steps)
  iid = task.eval_arrays("iid")
  accuracy = tasks.model_accuracy(model_cfg, task.decision(), task.pad_id)
  eval_seconds = [0.0]
  start = time.perf_counter()

  def evaluate(params):
    t = time.perf_counter()
    acc = accuracy(params, iid)
    eval_seconds[0] += time.perf_counter() - t
    return {"iid_accuracy": acc}

  hit = {}

  def stop(row):
    if row.get("iid_accuracy", 0.0) >= target and not hit:
      hit.update(step=row["step"], wall=time.perf_counter() - start)
      return True
    return False

  params = training.train(model_cfg, cfg, workdir, task.pad_id,
                          task.train_batches(cfg.batch_size, cfg.seed), evaluate,
                          log=lambda line: print("   ", line, flush=True), stop=stop)
  if not hit:
    print(f"train: did not reach {target:.0%} iid accuracy within {cfg.steps} steps")
    return params
  train_s = hit["wall"] - eval_seconds[0]
  print(f"train: {target:.0%} iid accuracy at step {hit['step']}: {train_s:.1f} s training, "
        f"{hit['wall']:.1f} s wall including evaluation (default Dyck model, "
        f"{jax.devices()[0].device_kind}, {os.cpu_count()} cores)")
  return params


def train_throughput(task, steps: int = 200):
  model_cfg = task.model_config()
  cfg = training.TrainConfig()
  tx = training.optimizer(cfg)
  m = mesh.data_mesh()
  state = training.initial_state(model_cfg, cfg, m)
  step_fn = training.make_train_step(model_cfg, tx, task.pad_id, m)
  batches = task.train_batches(cfg.batch_size, cfg.seed)
  host = [batches(i) for i in range(steps)]
  for b in {b["inputs"].shape: b for b in host}.values():  # compile every length bucket
    state, loss = step_fn(state, b["inputs"], b["targets"])
  loss.block_until_ready()
  start = time.perf_counter()
  for b in host:
    state, loss = step_fn(state, b["inputs"], b["targets"])
  loss.block_until_ready()
  seconds = time.perf_counter() - start
  tokens = sum(int((b["targets"] != task.pad_id).sum()) for b in host)
  print(f"throughput: training {tokens / seconds:,.0f} tokens/s ({steps} steps of "
        f"{cfg.batch_size} strings, {m.size} device(s), {jax.devices()[0].device_kind})")


# Dense bf16 peak FLOP/s by device kind (vendor figures, without sparsity).
PEAK_BF16_FLOPS = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100": 989e12,
                   "NVIDIA H200": 989e12, "NVIDIA A100-SXM4-80GB": 312e12,
                   "NVIDIA A100-SXM4-40GB": 312e12, "TPU v4": 275e12, "TPU v5 lite": 197e12,
                   "TPU v5e": 197e12, "TPU v5p": 459e12}


def mfu(steps: int = 20, batch_size: int = 32):
  cfg = transformer.ModelConfig(vocab_size=256, seq_len=512, n_layers=4, n_heads=8,
                                d_model=512, d_head=64, d_mlp=2048, dtype="bfloat16")
  train_cfg = training.TrainConfig(batch_size=batch_size)
  m = mesh.data_mesh()
  batch_size = mesh.round_up(batch_size, m)
  state = training.initial_state(cfg, train_cfg, m)
  step_fn = training.make_train_step(cfg, training.optimizer(train_cfg), 0, m)
  tokens = np.random.default_rng(0).integers(1, 256, (batch_size, cfg.seq_len)).astype(np.int32)
  flops = step_fn.lower(state, tokens, tokens).compile().cost_analysis()["flops"]
  state, loss = step_fn(state, tokens, tokens)  # compile outside the timing
  loss.block_until_ready()
  start = time.perf_counter()
  for _ in range(steps):
    state, loss = step_fn(state, tokens, tokens)
  loss.block_until_ready()
  achieved = flops * steps / (time.perf_counter() - start)
  kind = jax.devices()[0].device_kind
  peak = PEAK_BF16_FLOPS.get(kind)
  share = (f"{achieved / (peak * m.size):.1%} of the bf16 peak ({peak * m.size / 1e12:.0f} "
           f"TFLOP/s)" if peak else "peak unknown for this device")
  print(f"mfu: {achieved / 1e12:.2f} TFLOP/s achieved, {share} (d_model 512 char model, "
        f"batch {batch_size} x {cfg.seq_len}, bf16, {m.size} x {kind})")
