"""`svd`: replace each key and query by its projection on the top-r singular directions.

The basis comes from an SVD of the head's keys and queries collected on training strings.
Defaults follow our reading of the paper: one joint basis for keys and queries, uncentered.
Options: `centered` (subtract the mean first and add it back: PCA proper) and `separate`
(one basis for queries, another for keys).

Each sweep entry stores a projector matrix P (D x D, rank r) and a mean per site, so a
rank sweep is a stack of same-shaped arrays and applying it is one matmul:
x' = mean + (x - mean) P.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np

from proxies import base


def top_directions(x_NxD: np.ndarray, centered: bool) -> tuple[np.ndarray, np.ndarray]:
  """(mean [D], right singular vectors [D, D] ordered by singular value)."""
  x_NxD = np.asarray(x_NxD, np.float64)
  mean_D = x_NxD.mean(0) if centered else np.zeros(x_NxD.shape[1])
  _, _, vt_DxD = np.linalg.svd(x_NxD - mean_D, full_matrices=False)
  return mean_D, vt_DxD.T


def projector(directions_DxD: np.ndarray, rank: int) -> np.ndarray:
  u_DxR = directions_DxD[:, :rank]
  return u_DxR @ u_DxR.T


def fit(activations: Mapping[str, np.ndarray], ranks: Sequence[int],
        options: Mapping[str, bool]) -> dict:
  sites = sorted(activations)
  if options["separate"]:
    bases = {s: top_directions(activations[s], options["centered"]) for s in sites}
  else:
    joint = top_directions(np.concatenate([activations[s] for s in sites]),
                           options["centered"])
    bases = {s: joint for s in sites}
  arrays = {}
  for s in sites:
    mean_D, directions_DxD = bases[s]
    arrays[f"projector_{s}"] = np.stack([projector(directions_DxD, r) for r in ranks])
    arrays[f"mean_{s}"] = np.stack([mean_D] * len(ranks))
  return {k: v.astype(np.float32) for k, v in arrays.items()}


def apply(arrays: dict, site: str, x_BxLxD: jax.Array) -> jax.Array:
  mean_D = arrays[f"mean_{site}"].astype(x_BxLxD.dtype)
  projector_DxD = arrays[f"projector_{site}"].astype(x_BxLxD.dtype)
  # mean + (x - mean) P, with the mean's part folded into one offset [D]: the [B, L, D]
  # vectors pass through one matmul and one add, not a subtraction before it as well.
  return x_BxLxD @ projector_DxD + (mean_D - mean_D @ projector_DxD)


KIND = base.register(base.ProxyKind(
    name="svd", sweep="rank", sites=("q", "k"), allowed_sites=("q", "k", "v", "resid_pre"),
    fit=fit, apply=apply, options={"centered": False, "separate": False},
    sweep_default=(4,), scan_sweep=(1, 2, 4, 8, 16, 32, 64),
    sweep_label="rank (components)",
    bounds=(base.within_width,), checks=(base.one_width_unless_separate,),
    help={"rank": "rank(s) to keep, e.g. 4 or 1,2,4,8",
          "centered": "subtract the mean (PCA)",
          "separate": "one basis per site instead of a joint one"}))
