"""What a proxy is: a serializable spec, a registry of kinds, and the fitted pytree.

A proxy kind (`svd.py`, `kmeans.py`, `onehot.py`, `weight_svd.py`) has two pure functions:
  fit(fit_inputs, values, options) -> arrays stacked along a leading sweep axis [P, ...]
  apply(arrays, site, x) -> x', one sweep entry, called inside the jitted forward pass.
What `fit` reads is the kind's `fits_on`:
  "activations" - {site: [N, D]}, the head's vectors at every position of training strings;
  "weights"     - {"query": [M, D], "key": [M, D], ...}, the head's weights (data-independent);
  "nothing"     - {} (the proxy has no parameters).
A fitted `Proxy` is a pytree (the arrays) with static fields saying where it applies, so a
whole sweep is one `Proxy` whose arrays carry a leading axis, and `jax.vmap` over it runs
every setting in one compiled program.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import struct


@dataclasses.dataclass(frozen=True)
class ProxyKind:
  name: str
  sweep: str | None  # the swept hyperparameter ('rank', 'k'), or None
  sites: tuple[str, ...]  # default sites
  allowed_sites: tuple[str, ...]
  fit: Callable[[Mapping[str, np.ndarray], Sequence[int], Mapping[str, Any]], dict]
  apply: Callable[[dict, str, jax.Array], jax.Array]
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # name -> default
  fits_on: str = "activations"  # or "weights" or "nothing"


KINDS: dict[str, ProxyKind] = {}


def register(kind: ProxyKind) -> ProxyKind:
  KINDS[kind.name] = kind
  return kind


@dataclasses.dataclass(frozen=True)
class ProxySpec:
  """A serializable description of a proxy sweep: kind, where, which values, options."""

  kind: str
  layer: int
  head: int
  sites: tuple[str, ...]
  values: tuple[int, ...] = ()  # the sweep (ranks, K); empty for kinds without one
  options: tuple[tuple[str, Any], ...] = ()

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["options"] = dict(self.options)
    return d

  def labels(self) -> list[dict]:
    """One row label per sweep entry, e.g. {'proxy': 'svd', 'rank': 4}."""
    sweep = KINDS[self.kind].sweep
    base = {"proxy": self.kind, "layer": self.layer, "head": self.head,
            "sites": "+".join(self.sites), **dict(self.options)}
    if sweep is None:
      return [base]
    return [{**base, sweep: v} for v in self.values]


@struct.dataclass
class Proxy:
  """A fitted proxy. `arrays` may carry a leading sweep axis (then vmap over the Proxy)."""

  arrays: dict
  kind: str = struct.field(pytree_node=False)
  layer: int = struct.field(pytree_node=False)
  head: int = struct.field(pytree_node=False)
  sites: tuple[str, ...] = struct.field(pytree_node=False)

  def __call__(self, site: str, x: jax.Array) -> jax.Array:
    return KINDS[self.kind].apply(self.arrays, site, x)

  @property
  def size(self) -> int:
    """Number of settings along the sweep axis (1 for a kind without parameters)."""
    leaves = jax.tree_util.tree_leaves(self.arrays)
    return leaves[0].shape[0] if leaves else 1


def fit(spec: ProxySpec, fit_inputs: Mapping[str, np.ndarray]) -> Proxy:
  """Fits every setting of `spec` on what its kind `fits_on` (see the module docstring)."""
  kind = KINDS[spec.kind]
  options = {**kind.options, **dict(spec.options)}
  arrays = kind.fit(fit_inputs, spec.values, options)
  return Proxy(arrays=jax.tree_util.tree_map(np.asarray, arrays), kind=spec.kind,
               layer=spec.layer, head=spec.head, sites=spec.sites)
