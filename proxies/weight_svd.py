"""`weight_svd` (data-independent): rank-r truncation of one head's bilinear form.

The head's attention scores are x W_Q W_Kᵀ xᵀ / sqrt(D) (x: the layer-normed residual
stream, [M]). The proxy keeps the top-r singular triplets of W_QK = W_Q W_Kᵀ [M, M] and
applies them through the queries, q' = q A with A = pinv(W_Q) W_QK^(r) pinv(W_K)ᵀ [D, D]:
because the column space of W_QK^(r) lies in that of W_Q and its row space in that of W_K,
q' kᵀ = x W_Q A W_Kᵀ xᵀ = x W_QK^(r) xᵀ exactly, and the rank sweep is a stack of [D, D]
matrices like the svd proxy's. Fitted on the weights alone: no data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import numpy as np

from proxies import base


def truncated_bilinear(w_q_MxD: np.ndarray, w_k_MxD: np.ndarray, rank: int) -> np.ndarray:
  """W_QK^(r): the best rank-r approximation of W_Q W_Kᵀ [M, M]."""
  u, s, vt = np.linalg.svd(w_q_MxD @ w_k_MxD.T)
  return (u[:, :rank] * s[:rank]) @ vt[:rank]


def fit(weights: Mapping[str, np.ndarray], ranks: Sequence[int], options: Mapping) -> dict:
  w_q_MxD = np.asarray(weights["query"], np.float64)
  w_k_MxD = np.asarray(weights["key"], np.float64)
  pinv_q_DxM, pinv_k_DxM = np.linalg.pinv(w_q_MxD), np.linalg.pinv(w_k_MxD)
  maps = [pinv_q_DxM @ truncated_bilinear(w_q_MxD, w_k_MxD, r) @ pinv_k_DxM.T for r in ranks]
  return {"query_map": np.stack(maps).astype(np.float32)}


def apply(arrays: dict, site: str, q_BxLxD: jax.Array) -> jax.Array:
  return q_BxLxD @ arrays["query_map"].astype(q_BxLxD.dtype)


KIND = base.register(base.ProxyKind(
    name="weight_svd", sweep="rank", sites=("q",), allowed_sites=("q",),
    fit=fit, apply=apply, fits_on="weights",
    sweep_default=(4,), scan_sweep=(1, 2, 4, 8, 16, 32, 64), sweep_label="rank of W_QK",
    bounds=(base.within_width,),
    help={"rank": "rank(s) of W_Q W_K^T to keep"}))
