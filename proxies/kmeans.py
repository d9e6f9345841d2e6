"""`kmeans`: replace each key and query by the nearest of K centroids.

The centroids come from k-means on the head's keys and queries collected on training
strings: one joint clustering of keys and queries by default, one per site with `separate`.

The fit runs in JAX, so it runs on the accelerator beside the model: greedy k-means++
seeding (as scikit-learn's) then Lloyd iterations to convergence, N_INIT restarts and the
best inertia kept. The fitted arrays of a K sweep stack into one pytree by padding:
`centroids` [P, K_max, D] with `valid` [P, K_max] marking the centroids a setting has.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from proxies import base

N_INIT = 3  # restarts; the best inertia is kept
MAX_ITER = 300
TOL = 1e-4  # stop when the centroids move less than TOL x the data's mean variance (squared)
MAX_K = 1024  # the fit holds an [N, K] distance matrix per restart


def _sq_distances(x_NxD: jax.Array, c_KxD: jax.Array) -> jax.Array:
  d2_NxK = (jnp.sum(x_NxD**2, -1, keepdims=True) - 2 * x_NxD @ c_KxD.T
            + jnp.sum(c_KxD**2, -1))
  return jnp.maximum(d2_NxK, 0.0)


def _seed_centroids(x_NxD: jax.Array, k: int, key: jax.Array) -> jax.Array:
  """Greedy k-means++: each new centroid is the best of 2 + log(K) candidates drawn with
  probability proportional to the squared distance to the nearest centroid so far."""
  n = x_NxD.shape[0]
  n_trials = 2 + int(math.log(k))
  key, first = jax.random.split(key)
  c0_D = x_NxD[jax.random.randint(first, (), 0, n)]
  centroids_KxD = jnp.zeros((k, x_NxD.shape[1]), x_NxD.dtype).at[0].set(c0_D)
  closest_N = _sq_distances(x_NxD, c0_D[None])[:, 0]

  def add(i, carry):
    centroids_KxD, closest_N = carry
    total = closest_N.sum()  # 0 once every point is a centroid (duplicates): draw uniformly
    p_N = jnp.where(total > 0, closest_N / jnp.where(total > 0, total, 1.0), 1.0 / n)
    candidates_T = jax.random.choice(jax.random.fold_in(key, i), n, (n_trials,), p=p_N)
    trial_closest_TxN = jnp.minimum(closest_N, _sq_distances(x_NxD, x_NxD[candidates_T]).T)
    best = jnp.argmin(trial_closest_TxN.sum(-1))
    return centroids_KxD.at[i].set(x_NxD[candidates_T[best]]), trial_closest_TxN[best]

  centroids_KxD, _ = jax.lax.fori_loop(1, k, add, (centroids_KxD, closest_N))
  return centroids_KxD


def _lloyd(x_NxD: jax.Array, centroids_KxD: jax.Array, tol: jax.Array) -> jax.Array:
  k = centroids_KxD.shape[0]

  def step(carry):
    centroids_KxD, _, i = carry
    nearest_N = jnp.argmin(_sq_distances(x_NxD, centroids_KxD), -1)
    assign_NxK = jax.nn.one_hot(nearest_N, k, dtype=x_NxD.dtype)
    counts_K = assign_NxK.sum(0)
    means_KxD = (assign_NxK.T @ x_NxD) / jnp.maximum(counts_K, 1)[:, None]
    new_KxD = jnp.where((counts_K > 0)[:, None], means_KxD, centroids_KxD)  # empty: stay
    return new_KxD, jnp.sum((new_KxD - centroids_KxD) ** 2), i + 1

  def running(carry):
    _, shift, i = carry
    return (shift > tol) & (i < MAX_ITER)

  centroids_KxD, _, _ = jax.lax.while_loop(running, step, (centroids_KxD, jnp.inf, 0))
  return centroids_KxD


@functools.partial(jax.jit, static_argnames=("k", "n_init"))
def kmeans(x_NxD: jax.Array, k: int, key: jax.Array, n_init: int = N_INIT
           ) -> tuple[jax.Array, jax.Array]:
  """(centroids [k, D], inertia) of the best of `n_init` k-means++ / Lloyd runs."""
  tol = TOL * jnp.mean(jnp.var(x_NxD, axis=0))

  def one_run(key):
    centroids_KxD = _lloyd(x_NxD, _seed_centroids(x_NxD, k, key), tol)
    return centroids_KxD, jnp.sum(jnp.min(_sq_distances(x_NxD, centroids_KxD), -1))

  # One restart after another: under vmap, every restart would iterate until the slowest
  # converged, and the CPU runs batched matmuls no faster than a loop of them.
  centroids_IxKxD, inertia_I = jax.lax.map(one_run, jax.random.split(key, n_init))
  best = jnp.argmin(inertia_I)
  return centroids_IxKxD[best], inertia_I[best]


def fit(activations: Mapping[str, np.ndarray], ks: Sequence[int], options: Mapping) -> dict:
  sites = sorted(activations)
  groups = [[s] for s in sites] if options["separate"] else [sites]
  k_max = max(ks)
  arrays = {}
  for group in groups:
    x_NxD = jnp.asarray(np.concatenate([activations[s] for s in group]), jnp.float32)
    key = jax.random.key(options["seed"])
    padded, valid = [], []
    for k in ks:  # one compilation per K; the result for a K does not depend on the others
      centroids_KxD = np.asarray(kmeans(x_NxD, k, jax.random.fold_in(key, k))[0])
      padded.append(np.pad(centroids_KxD, ((0, k_max - k), (0, 0))))
      valid.append(np.arange(k_max) < k)
    for s in group:
      arrays[f"centroids_{s}"], arrays[f"valid_{s}"] = np.stack(padded), np.stack(valid)
  return arrays


def _masked_sq_distances(x_NxD, centroids_KxD, valid_K):
  return jnp.where(valid_K, _sq_distances(x_NxD, centroids_KxD), jnp.inf)


def apply(arrays: dict, site: str, x_BxLxD: jax.Array) -> jax.Array:
  centroids_KxD = arrays[f"centroids_{site}"].astype(jnp.float32)
  x_NxD = x_BxLxD.reshape(-1, x_BxLxD.shape[-1]).astype(jnp.float32)
  nearest_N = jnp.argmin(_masked_sq_distances(x_NxD, centroids_KxD, arrays[f"valid_{site}"]), -1)
  return centroids_KxD[nearest_N].reshape(x_BxLxD.shape).astype(x_BxLxD.dtype)


KIND = base.register(base.ProxyKind(
    name="kmeans", sweep="k", sites=("q", "k"), allowed_sites=("q", "k", "v", "resid_pre"),
    fit=fit, apply=apply, options={"separate": False, "seed": 0},
    sweep_default=(8,), scan_sweep=(4, 16, 64, 256), sweep_label="K (clusters)",
    bounds=(base.at_most(MAX_K), base.within_vectors), checks=(base.one_width_unless_separate,),
    help={"k": "number(s) of centroids, e.g. 2,4,8,16,32",
          "separate": "one clustering per site instead of a joint one",
          "seed": "seeds the initialization"}))
