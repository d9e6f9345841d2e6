"""Where arrays live: one data-parallel device mesh over every device of every process.

The same code runs on one CPU, several host devices, one or more GPUs, and a TPU pod slice:
  - `initialize()` joins a multi-process job (jax.distributed) when there is one;
  - `data_mesh()` puts every device on one `data` axis;
  - batches are split along their first axis over it, parameters and optimizer state are
    replicated, and `jit` is given those shardings, so XLA inserts the gradient all-reduce;
  - every process computes the same global batch (a function of the step and the seed) and
    hands over only its own rows, so no process ever needs another's data;
  - files and logs are written by process 0 only (`is_main()`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA = "data"


def initialize() -> None:
  """Joins the multi-process job described by the environment, if any: a TPU pod slice
  (TPU_WORKER_HOSTNAMES lists several hosts; everything else is detected by JAX) or an
  explicit cluster (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID). A single
  process does nothing. Safe to call twice."""
  if jax.distributed.is_initialized():
    return
  explicit = os.environ.get("JAX_COORDINATOR_ADDRESS")
  tpu_pod = "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if explicit:
    # Collectives between CPU processes (no effect on accelerators). Nothing here may touch
    # the backend before jax.distributed.initialize().
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=explicit,
                               num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                               process_id=int(os.environ["JAX_PROCESS_ID"]))
  elif tpu_pod:
    jax.distributed.initialize()


def is_main() -> bool:
  return jax.process_index() == 0


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.array(devices), (DATA,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Split along the first axis over the data axis; the rest whole."""
  return NamedSharding(mesh, PartitionSpec(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def round_up(batch_size: int, mesh: Mesh) -> int:
  """The smallest multiple of the mesh's devices that holds `batch_size` rows."""
  return -(-batch_size // mesh.size) * mesh.size


def check_divisible(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
  if batch_size % mesh.size:
    raise ValueError(f"{what}={batch_size} must be a multiple of the {mesh.size} devices "
                     f"of the mesh")


def shard_batch(mesh: Mesh, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
  """The same global batch on every process -> global arrays split over the data axis;
  each process contributes only the rows of its own devices."""
  sharding = batch_sharding(mesh)
  out = {}
  for name, array in batch.items():
    array = np.asarray(array)
    n = array.shape[0]
    local = sharding.addressable_devices_indices_map(array.shape)
    rows = sorted({index[0].indices(n)[:2] for index in local.values()})
    start, stop = rows[0][0], rows[-1][1]  # a process's devices hold one contiguous block
    out[name] = jax.make_array_from_process_local_data(sharding, array[start:stop],
                                                       array.shape)
  return out


def replicate(mesh: Mesh, tree):
  """Puts a pytree of arrays (the same on every process) on every device of the mesh."""
  sharding = replicated(mesh)

  def one(x):
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x
    host = to_host(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree_util.tree_map(one, tree)


def to_host(tree):
  """A pytree of global arrays -> numpy on every process (gathered across processes)."""

  def one(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(x)
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree_util.tree_map(one, tree)


def barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def main_first(name: str, fn):
  """fn() on process 0, then on every other process (which wait for it): e.g. generate a
  dataset once, then read it everywhere."""
  if not is_main():
    barrier(name)
  result = fn()
  if is_main():
    barrier(name)
  return result
