"""Trains and evaluates the tiny Dyck setting on whatever devices and processes it is given,
and prints what the sharding tests compare (run as `python -m tests.sharded_worker`).

  python -m tests.sharded_worker OUT DEVICES   # one process, the first DEVICES devices
With JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID set, every process runs
the same program over all devices of all processes; process 0 writes OUT/result.json.
"""

import hashlib
import json
import sys

import jax
import numpy as np

from models import mesh


def main(out: str, n_devices: int) -> None:
  mesh.initialize()
  import proxies
  from pipeline import evaluation, tasks
  from models import training
  from tests import tiny

  devices = jax.devices()[:n_devices] if n_devices else jax.devices()
  m = mesh.data_mesh(devices)
  task = tasks.DyckTask(tiny.DATA, f"{out}/tfds")
  model_cfg = task.model_config(**tiny.MODEL)
  cfg = training.TrainConfig(steps=20, batch_size=16, log_every=10, eval_every=10,
                             checkpoint_every=10)
  run_dir = f"{out}/run"
  accuracy = tasks.model_accuracy(model_cfg, task.decision(), task.pad_id, mesh=m)
  iid = task.eval_arrays("iid")
  params = training.train(model_cfg, cfg, run_dir, task.pad_id, task.train_batches(16, 0),
                          lambda p: {"iid_accuracy": accuracy(p, iid)}, mesh=m,
                          log=lambda line: None)
  restored = mesh.to_host(training.restore_params(run_dir, model_cfg, cfg, mesh=m))
  same = all(np.array_equal(a, b) for a, b in
             zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(restored)))
  spec = proxies.ProxySpec("svd", ((1, 0),), ("q", "k"), (1, 2, 8),
                           (("centered", False), ("separate", False)))
  config = evaluation.EvalConfig(spec, ("iid", "unseen_depth"), n_fit=50, batch_size=16,
                                 n_bootstrap=10)
  result = evaluation.evaluate(task, model_cfg, restored, config, mesh=m)
  leaves = jax.tree_util.tree_leaves(params)
  report = {
      "devices": m.size, "processes": jax.process_count(), "restored_equals_trained": same,
      "params": [np.asarray(x, np.float64).ravel().tolist() for x in leaves],
      "rows": result.rows, "compilations": result.compilations, "shapes": result.shapes,
      "digest": hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in leaves)).hexdigest(),
  }
  if mesh.is_main():
    with open(f"{out}/result.json", "w", encoding="utf-8") as f:
      json.dump(report, f)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]))
