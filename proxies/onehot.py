"""`onehot`: replace one head's attention distribution by a one-hot on its argmax.

No parameters and nothing to fit. Only causal keys carry mass, so the argmax is causal;
ties go to the latest key (the nearest bracket), our reading of the paper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from proxies import base


def fit(fit_inputs: Mapping, values: Sequence[int], options: Mapping) -> dict:
  return {}


def apply(arrays: dict, site: str, pattern_BxLxL: jax.Array) -> jax.Array:
  length = pattern_BxLxL.shape[-1]
  latest_first = jnp.argmax(pattern_BxLxL[..., ::-1], axis=-1)  # argmax takes the first max
  return jax.nn.one_hot(length - 1 - latest_first, length, dtype=pattern_BxLxL.dtype)


KIND = base.register(base.ProxyKind(
    name="onehot", sweep=None, sites=("pattern",), allowed_sites=("pattern",),
    fit=fit, apply=apply, fits_on="nothing"))
