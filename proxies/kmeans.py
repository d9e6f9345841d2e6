"""`kmeans`: replace each key and query by the nearest of K centroids.

The centroids come from k-means on the head's keys and queries collected on training
strings: one joint clustering of keys and queries by default, one per site with `separate`.

The fit runs in JAX, so it runs on the accelerator beside the model: greedy k-means++
seeding (as scikit-learn's) then Lloyd iterations to convergence, `n_init` restarts vmapped
and the best inertia kept. K is a traced argument over centroids padded to the sweep's
largest K, so one compiled fit serves the whole K sweep, and the fitted arrays of a sweep
stack into one pytree: `centroids` [P, K_max, D] with `valid` [P, K_max] marking the
centroids a setting really has.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from proxies import base

N_INIT = 10  # restarts (scikit-learn's classic default); the best inertia is kept
MAX_ITER = 300
TOL = 1e-4  # stop when the centroids move less than TOL x the data's mean variance (squared)


def _sq_distances(x_NxD: jax.Array, c_KxD: jax.Array) -> jax.Array:
  d2_NxK = (jnp.sum(x_NxD**2, -1, keepdims=True) - 2 * x_NxD @ c_KxD.T
            + jnp.sum(c_KxD**2, -1))
  return jnp.maximum(d2_NxK, 0.0)


def _seed_centroids(x_NxD, k, key, k_max: int):
  """Greedy k-means++: each new centroid is the best of 2 + log(K) candidates drawn with
  probability proportional to the squared distance to the nearest centroid so far.

  Candidates are drawn one key each and the unused ones masked, so a given K gets the same
  centroids whatever the largest K of its sweep."""
  n = x_NxD.shape[0]
  n_trials_max = 2 + int(math.log(k_max))
  n_trials = 2 + jnp.floor(jnp.log(k)).astype(jnp.int32)
  key, first = jax.random.split(key)
  c0_D = x_NxD[jax.random.randint(first, (), 0, n)]
  centroids_KxD = jnp.zeros((k_max, x_NxD.shape[1]), x_NxD.dtype).at[0].set(c0_D)
  closest_N = _sq_distances(x_NxD, c0_D[None])[:, 0]

  def add(i, carry):
    centroids_KxD, closest_N = carry
    total = closest_N.sum()  # 0 once every point is a centroid (duplicates): draw uniformly
    p_N = jnp.where(total > 0, closest_N / jnp.where(total > 0, total, 1.0), 1.0 / n)
    keys_T = jax.vmap(lambda t: jax.random.fold_in(jax.random.fold_in(key, i), t))(
        jnp.arange(n_trials_max))
    candidates_T = jax.vmap(lambda kt: jax.random.choice(kt, n, p=p_N))(keys_T)
    trial_closest_TxN = jnp.minimum(closest_N, _sq_distances(x_NxD, x_NxD[candidates_T]).T)
    potential_T = jnp.where(jnp.arange(n_trials_max) < n_trials,
                            trial_closest_TxN.sum(-1), jnp.inf)
    best = jnp.argmin(potential_T)
    take = i < k  # centroids past K stay unused (and are masked out)
    centroids_KxD = jnp.where(take, centroids_KxD.at[i].set(x_NxD[candidates_T[best]]),
                              centroids_KxD)
    closest_N = jnp.where(take, trial_closest_TxN[best], closest_N)
    return centroids_KxD, closest_N

  centroids_KxD, _ = jax.lax.fori_loop(1, k_max, add, (centroids_KxD, closest_N))
  return centroids_KxD


def _masked_sq_distances(x_NxD, centroids_KxD, valid_K):
  return jnp.where(valid_K, _sq_distances(x_NxD, centroids_KxD), jnp.inf)


def _lloyd(x_NxD, centroids_KxD, valid_K, tol):
  def step(carry):
    centroids_KxD, _, i = carry
    assign_NxK = jax.nn.one_hot(jnp.argmin(_masked_sq_distances(x_NxD, centroids_KxD, valid_K), -1),
                                centroids_KxD.shape[0], dtype=x_NxD.dtype)
    counts_K = assign_NxK.sum(0)
    means_KxD = (assign_NxK.T @ x_NxD) / jnp.maximum(counts_K, 1)[:, None]
    new_KxD = jnp.where((counts_K > 0)[:, None], means_KxD, centroids_KxD)  # empty: stay
    shift = jnp.sum((new_KxD - centroids_KxD) ** 2)
    return new_KxD, shift, i + 1

  def running(carry):
    _, shift, i = carry
    return (shift > tol) & (i < MAX_ITER)

  centroids_KxD, _, _ = jax.lax.while_loop(running, step, (centroids_KxD, jnp.inf, 0))
  return centroids_KxD


@functools.partial(jax.jit, static_argnames=("k_max", "n_init"))
def kmeans(x_NxD: jax.Array, k: jax.Array, key: jax.Array, k_max: int,
           n_init: int = N_INIT) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(centroids [k_max, D], valid [k_max], inertia) of the best of `n_init` runs."""
  valid_K = jnp.arange(k_max) < k
  tol = TOL * jnp.mean(jnp.var(x_NxD, axis=0))

  def one_run(key):
    centroids_KxD = _lloyd(x_NxD, _seed_centroids(x_NxD, k, key, k_max), valid_K, tol)
    inertia = jnp.sum(jnp.min(_masked_sq_distances(x_NxD, centroids_KxD, valid_K), -1))
    return centroids_KxD, inertia

  centroids_IxKxD, inertia_I = jax.vmap(one_run)(jax.random.split(key, n_init))
  best = jnp.argmin(inertia_I)
  return centroids_IxKxD[best], valid_K, inertia_I[best]


def fit(activations: Mapping[str, np.ndarray], ks: Sequence[int], options: Mapping) -> dict:
  sites = sorted(activations)
  groups = [[s] for s in sites] if options["separate"] else [sites]
  k_max = max(ks)
  arrays = {}
  for group in groups:
    x_NxD = jnp.asarray(np.concatenate([activations[s] for s in group]), jnp.float32)
    key = jax.random.key(options["seed"])
    fits = [kmeans(x_NxD, k, jax.random.fold_in(key, k), k_max) for k in ks]
    for s in group:
      arrays[f"centroids_{s}"] = np.stack([np.asarray(c) for c, _, _ in fits])
      arrays[f"valid_{s}"] = np.stack([np.asarray(v) for _, v, _ in fits])
  return arrays


def apply(arrays: dict, site: str, x_BxLxD: jax.Array) -> jax.Array:
  centroids_KxD = arrays[f"centroids_{site}"].astype(jnp.float32)
  x_NxD = x_BxLxD.reshape(-1, x_BxLxD.shape[-1]).astype(jnp.float32)
  nearest_N = jnp.argmin(_masked_sq_distances(x_NxD, centroids_KxD, arrays[f"valid_{site}"]), -1)
  return centroids_KxD[nearest_N].reshape(x_BxLxD.shape).astype(x_BxLxD.dtype)


KIND = base.register(base.ProxyKind(
    name="kmeans", sweep="k", sites=("q", "k"), allowed_sites=("q", "k", "v", "resid_pre"),
    fit=fit, apply=apply, options={"separate": False, "seed": 0}))
