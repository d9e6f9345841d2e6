"""`sae`: replace each key and query by its reconstruction through a TopK sparse autoencoder.

The form of Gao et al. (2024): z = TopK(W_enc (x - b_pre) + b_enc), x' = W_dec z + b_pre,
the decoder's columns kept at unit norm. One dictionary for keys and queries together by
default (as `svd`'s joint basis), one per site with `separate`. The sweep is k, the
number of active latents; `width` is the number of latents (default: 4x the site's width).

Fitted in JAX, in one compiled program for the whole sweep: every k trains side by side
(vmapped) with Adam on the same fitting vectors the other kinds use, from one
initialization (the decoder random unit columns, the encoder its transpose, b_pre the
mean), on the same minibatches, so the settings differ by k alone. Latents that have not
fired for `dead_steps` steps are revived by the auxiliary loss of Gao et al.: the residual
x - x' is reconstructed from the top `AUX_K` dead latents, weighted `AUX_WEIGHT`.

k varies along the sweep axis, so TopK is a threshold: the k-th largest pre-activation of
each vector, read from `lax.top_k` at the sweep's largest k (static: the length of the
stored one-hot `select` of each setting's k) by a dot with that one-hot; ties at the
threshold keep every tied latent.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from proxies import base

AUX_K = 32  # dead latents that reconstruct the residual in the auxiliary loss
AUX_WEIGHT = 1.0 / 32
BATCH = 256  # fitting vectors per Adam step
WIDTH_MULTIPLE = 4  # latents per dimension of the site, unless `width` says otherwise


def _top_k(pre_NxW: jax.Array, select_K: jax.Array) -> jax.Array:
  """ReLU of the k largest entries of each row, zero elsewhere; `select_K` is one-hot at
  k - 1 (its length, the sweep's largest k, is static)."""
  largest_NxK = jax.lax.top_k(pre_NxW, select_K.shape[-1])[0]
  kth_N = largest_NxK @ select_K
  return jnp.where(pre_NxW >= kth_N[:, None], jax.nn.relu(pre_NxW), 0.0)


def encode(p: Mapping[str, jax.Array], x_NxD: jax.Array, select_K: jax.Array) -> jax.Array:
  return _top_k((x_NxD - p["b_pre"]) @ p["w_enc"].T + p["b_enc"], select_K)


def decode(p: Mapping[str, jax.Array], z_NxW: jax.Array) -> jax.Array:
  return z_NxW @ p["w_dec"].T + p["b_pre"]


def selectors(ks: Sequence[int]) -> np.ndarray:
  """[P, max k]: one-hot at k - 1 for each k of the sweep."""
  return np.eye(max(ks), dtype=np.float32)[np.asarray(ks) - 1]


def _unit_columns(w_DxW: jax.Array) -> jax.Array:
  return w_DxW / jnp.maximum(jnp.linalg.norm(w_DxW, axis=0, keepdims=True), 1e-8)


def initial(x_NxD: np.ndarray, width: int, seed: int) -> dict[str, np.ndarray]:
  d = x_NxD.shape[1]
  w_dec = np.asarray(_unit_columns(jax.random.normal(jax.random.key(seed), (d, width))))
  return {"w_enc": w_dec.T.copy(), "b_enc": np.zeros(width, np.float32), "w_dec": w_dec,
          "b_pre": x_NxD.mean(0).astype(np.float32)}


@functools.partial(jax.jit, static_argnames=("steps", "dead_steps", "learning_rate", "seed"))
def _train(x_NxD, init, select_PxK, *, steps: int, dead_steps: int, learning_rate: float,
           seed: int):
  """Every k of the sweep (`select_PxK`, `selectors`) trained from `init` on the same
  minibatches; returns the parameters
  stacked [P, ...] and each setting's fraction of latents dead at the end."""
  n = x_NxD.shape[0]
  tx = optax.adam(learning_rate)
  variance = jnp.mean(jnp.sum((x_NxD - x_NxD.mean(0)) ** 2, -1))

  def loss_fn(p, x_BxD, select_K, since_fired_W):
    pre_BxW = (x_BxD - p["b_pre"]) @ p["w_enc"].T + p["b_enc"]
    z_BxW = _top_k(pre_BxW, select_K)
    residual_BxD = x_BxD - decode(p, z_BxW)
    mse = jnp.mean(jnp.sum(residual_BxD ** 2, -1)) / variance
    # Auxiliary loss: the dead latents' top AUX_K reconstruct what the live ones missed.
    dead_W = since_fired_W >= dead_steps
    aux_k = min(AUX_K, pre_BxW.shape[-1])
    dead_pre_BxW = jnp.where(dead_W, pre_BxW, -jnp.inf)
    kth_B = jax.lax.top_k(dead_pre_BxW, aux_k)[0][:, -1]
    z_aux_BxW = jnp.where(dead_W & (dead_pre_BxW >= kth_B[:, None]),
                          jax.nn.relu(pre_BxW), 0.0)
    # The residual is the target: the auxiliary loss trains the dead latents only.
    aux = jnp.mean(jnp.sum((jax.lax.stop_gradient(residual_BxD)
                            - z_aux_BxW @ p["w_dec"].T) ** 2, -1)) / variance
    return mse + AUX_WEIGHT * jnp.where(dead_W.any(), aux, 0.0), z_BxW

  def one_setting(select_K):
    def step(carry, key):
      p, opt_state, since_fired_W = carry
      rows = jax.random.randint(key, (min(BATCH, n),), 0, n)
      (_, z_BxW), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          p, x_NxD[rows], select_K, since_fired_W)
      updates, opt_state = tx.update(grads, opt_state, p)
      p = optax.apply_updates(p, updates)
      p = {**p, "w_dec": _unit_columns(p["w_dec"])}
      fired_W = (z_BxW > 0).any(0)
      return (p, opt_state, jnp.where(fired_W, 0, since_fired_W + 1)), None

    keys = jax.random.split(jax.random.key(seed + 1), steps)
    start = (init, tx.init(init), jnp.zeros(init["b_enc"].shape, jnp.int32))
    (p, _, since_fired_W), _ = jax.lax.scan(step, start, keys)
    return p, jnp.mean(since_fired_W >= dead_steps)

  return jax.vmap(one_setting)(select_PxK)


def train(x_NxD: np.ndarray, ks: Sequence[int], options: Mapping) -> tuple[dict, np.ndarray]:
  """(parameters stacked [P, ...], fraction of dead latents [P]) of one dictionary per k."""
  x = np.asarray(x_NxD, np.float32)
  if int(options["width"]) < 0 or int(options["steps"]) < 1:
    raise base.ProxyError(f"sae width must be >= 1 (0: 4x the site's width) and steps >= 1, "
                          f"got width {options['width']}, steps {options['steps']}")
  width = int(options["width"]) or WIDTH_MULTIPLE * x.shape[1]
  for k in ks:
    if not 1 <= k <= width:
      raise base.ProxyError(f"sae k must be in 1..width={width}, got {k}")
  init = initial(x, width, int(options["seed"]))
  with tqdm.tqdm(total=1, desc=f"sae: {len(ks)} dictionaries x {options['steps']} steps",
                 disable=None, leave=False):
    p, dead = _train(jnp.asarray(x), init, jnp.asarray(selectors(ks)),
                     steps=int(options["steps"]), dead_steps=int(options["dead_steps"]),
                     learning_rate=float(options["learning_rate"]), seed=int(options["seed"]))
  return jax.tree_util.tree_map(np.asarray, p), np.asarray(dead)


def fit(activations: Mapping[str, np.ndarray], ks: Sequence[int], options: Mapping) -> dict:
  sites = sorted(activations)
  if options["separate"]:
    fitted = {s: train(activations[s], ks, options)[0] for s in sites}
  else:
    joint = train(np.concatenate([activations[s] for s in sites]), ks, options)[0]
    fitted = {s: joint for s in sites}
  arrays = {f"{name}_{s}": v for s in sites for name, v in fitted[s].items()}
  arrays.update({f"select_{s}": selectors(ks) for s in sites})
  return arrays


def apply(arrays: dict, site: str, x_BxLxD: jax.Array) -> jax.Array:
  p = {name: arrays[f"{name}_{site}"].astype(x_BxLxD.dtype)
       for name in ("w_enc", "b_enc", "w_dec", "b_pre")}
  b, l, d = x_BxLxD.shape
  x_NxD = x_BxLxD.reshape(b * l, d)
  return decode(p, encode(p, x_NxD, arrays[f"select_{site}"])).reshape(b, l, d)


def diagnose(arrays: dict, site: str, x_NxD: np.ndarray) -> dict[str, np.ndarray]:
  """Per setting [P], on the vectors `x_NxD`: fvu (fraction of their variance the
  reconstruction misses), l0 (mean active latents) and dead (fraction of latents that
  never fire on them)."""
  x = jnp.asarray(x_NxD, jnp.float32)
  variance = jnp.sum((x - x.mean(0)) ** 2)

  def one(entry):
    p = {name: entry[f"{name}_{site}"] for name in ("w_enc", "b_enc", "w_dec", "b_pre")}
    z_NxW = encode(p, x, entry[f"select_{site}"])
    fvu = jnp.sum((x - decode(p, z_NxW)) ** 2) / variance
    return fvu, jnp.mean(jnp.sum(z_NxW > 0, -1)), jnp.mean(~(z_NxW > 0).any(0))
  names = [k for k in arrays if k.endswith(f"_{site}")]
  fvu, l0, dead = jax.lax.map(one, {k: jnp.asarray(arrays[k]) for k in names})
  return {"fvu": np.asarray(fvu), "l0": np.asarray(l0), "dead": np.asarray(dead)}


def fraction_unexplained(arrays: dict, site: str, x_NxD: np.ndarray) -> np.ndarray:
  """[P]: each setting's fraction of the variance of `x_NxD` its reconstruction misses."""
  return diagnose(arrays, site, x_NxD)["fvu"]


def within_latents(spec: base.ProxySpec, widths: Mapping, vectors: int | None):
  """k active latents: at most the dictionary's latents (`width`, or 4x the site's)."""
  width = int(dict(spec.options).get("width", 0))
  if width > 0:
    return width, f" (the dictionary's width={width} latents)"
  narrowest = min(spec.sites, key=lambda s: widths[s])
  latents = WIDTH_MULTIPLE * widths[narrowest]
  return latents, (f" (the dictionary's {latents} latents: {WIDTH_MULTIPLE} x "
                   f"{narrowest}'s {widths[narrowest]} dimensions)")


KIND = base.register(base.ProxyKind(
    name="sae", sweep="k", sites=("q", "k"), allowed_sites=("q", "k", "v", "resid_pre"),
    fit=fit, apply=apply, diagnose=diagnose, diagnostics=("fvu", "l0", "dead"),
    options={"separate": False, "width": 0, "steps": 1000, "learning_rate": 3e-3,
             "seed": 0, "dead_steps": 200},
    sweep_default=(1, 2, 4, 8, 16, 32), sweep_label="k (active latents)",
    scan_sweep=(1, 2, 4, 8, 16, 32),
    bounds=(within_latents, base.within_vectors), checks=(base.one_width_unless_separate,),
    help={"k": "active latents, e.g. 1,2,4,8,16,32",
          "separate": "one dictionary per site instead of a joint one",
          "width": "latents (0: 4x the site's width)",
          "steps": "Adam steps of the fit", "learning_rate": "of the fit's Adam",
          "seed": "of the dictionary's initialization and minibatches",
          "dead_steps": "steps without firing after which a latent counts as dead"}))
