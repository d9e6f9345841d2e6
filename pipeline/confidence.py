"""The model's confidence at each scored position, as a group every evaluation reports.

Out of distribution the model is often unsure, and where its top two candidates are close
any perturbation flips its argmax: a proxy's agreement there says little about the proxy.
The `margin` group buckets each position by the model's top-1 margin, the probability of
its first choice minus that of its second among the decision's candidates (for Dyck the
closing brackets), so that agreement can be compared at equal confidence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from models import mesh as mesh_lib
from proxies import faithfulness, metrics

GROUP = "margin"
EDGES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)  # bucket i: [EDGES[i], EDGES[i + 1]); the last to 1
LABELS = [f"{a:g}-{b:g}" for a, b in zip(EDGES, EDGES[1:])] + [f"{EDGES[-1]:g}-1"]


def margins(model, params, arrays, decision: metrics.Decision, pad_id: int,
            batch_size: int = 256, mesh=None) -> np.ndarray:
  """float[N, L]: the model's top-1 margin at every position (`model` a SiteModel)."""
  mesh = mesh or mesh_lib.data_mesh()
  batch_size = mesh_lib.round_up(batch_size, mesh)

  def margin(params, inputs_BxL):
    logits_BxLxV, _ = model.run(params, inputs_BxL)
    probs = jax.nn.softmax(logits_BxLxV[..., decision.lo:decision.hi], axis=-1)
    top2 = jax.lax.top_k(probs, min(2, probs.shape[-1]))[0]
    return top2[..., 0] - (top2[..., 1] if top2.shape[-1] > 1 else 0.0)

  margin = jax.jit(margin, in_shardings=(mesh_lib.replicated(mesh),
                                         mesh_lib.batch_sharding(mesh)))
  params = mesh_lib.replicate(mesh, params)
  n, length = arrays["inputs"].shape
  out = np.zeros((n, length), np.float32)
  fill = {"inputs": pad_id, "scored": False}
  widths = faithfulness.length_ladder(length)
  for batch, rows in faithfulness.fixed_batches(arrays, batch_size, fill, widths):
    got = mesh_lib.to_host(margin(params, mesh_lib.shard_batch(mesh, batch)["inputs"]))
    out[rows, :got.shape[1]] = got[:len(rows)]
  return out


def buckets(margins_NxL: np.ndarray) -> np.ndarray:
  """int[N, L]: the margin bucket of every position."""
  return (np.searchsorted(EDGES, margins_NxL, side="right") - 1).astype(np.int32)
