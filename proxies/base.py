"""What a proxy is: a serializable spec, a registry of kinds, and the fitted pytree.

A proxy kind (`svd.py`, `kmeans.py`, `onehot.py`, `weight_svd.py`) has two pure functions:
  fit(fit_inputs, values, options) -> arrays stacked along a leading sweep axis [P, ...]
  apply(arrays, site, x) -> x', one sweep entry, called inside the jitted forward pass.
What `fit` reads is the kind's `fits_on`:
  "activations" - {site: [N, D]}, the head's vectors at every position of training strings;
  "weights"     - {"query": [M, D], "key": [M, D], ...}, the head's weights (data-independent);
  "nothing"     - {} (the proxy has no parameters).
A fitted `Proxy` is a pytree (the arrays, one dict per simplified head) with static fields
saying where it applies, so a whole sweep is one `Proxy` whose arrays carry a leading axis,
and a map or vmap over it runs every setting in one compiled program. A spec may name
several heads (both layers' heads, every head of a layer): each is fitted on its own, and
every setting simplifies all of them at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import struct

from models.sites import Site, Target, target


@dataclasses.dataclass(frozen=True)
class ProxyKind:
  name: str
  sweep: str | None  # the swept hyperparameter ('rank', 'k'), or None
  sites: tuple[Site, ...]  # default sites
  allowed_sites: tuple[Site, ...]
  fit: Callable[[Mapping[str, np.ndarray], Sequence[int], Mapping[str, Any]], dict]
  apply: Callable[[dict, Site, jax.Array], jax.Array]
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # name -> default
  fits_on: str = "activations"  # or "weights" or "nothing"
  sweep_default: tuple[int, ...] = ()  # the sweep when none is asked for
  # What its sweep and each option mean, for the command line's --help (flag -> text).
  help: Mapping[str, str] = dataclasses.field(default_factory=dict)
  # Optional: (arrays [P, ...], site, vectors [N, D]) -> {name: [P]}, how well each setting
  # reconstructs a split's vectors at a site; evaluation writes the mean over the proxy's
  # heads and sites beside the faithfulness rows.
  diagnose: Callable[[dict, Site, np.ndarray], dict[str, np.ndarray]] | None = None


KINDS: dict[str, ProxyKind] = {}


def register(kind: ProxyKind) -> ProxyKind:
  """Adds a kind to the registry, the one list of kinds: the command line, row labels,
  validation and the reproduction's plans all read it."""
  kind = dataclasses.replace(kind, sites=tuple(Site(s) for s in kind.sites),
                             allowed_sites=tuple(Site(s) for s in kind.allowed_sites))
  KINDS[kind.name] = kind
  return kind


Head = tuple[int, int]  # (layer, head)


class ProxyError(ValueError):
  """A proxy spec that cannot be fitted or applied as asked (unknown kind, bad site, ...)."""


@dataclasses.dataclass(frozen=True)
class ProxySpec:
  """A serializable description of a proxy sweep: kind, which heads, which of their sites,
  which values, options. Each head is fitted on its own; setting p of the sweep applies
  value p at every head at once (e.g. rank 4 on both layers' heads)."""

  kind: str
  heads: tuple[Head, ...]
  sites: tuple[Site, ...]
  values: tuple[int, ...] = ()  # the sweep (ranks, K); empty for kinds without one
  options: tuple[tuple[str, Any], ...] = ()

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ProxyError(f"unknown proxy kind {self.kind!r}; choose one of: {', '.join(KINDS)}")
    heads = tuple(dict.fromkeys((int(l), int(h)) for l, h in self.heads))
    if not heads:
      raise ProxyError("a proxy needs at least one (layer, head)")
    try:
      sites = tuple(Site(s) for s in self.sites)
    except ValueError:
      raise ProxyError(f"unknown site in {self.sites}; choose from: "
                       f"{', '.join(Site)}") from None
    allowed = KINDS[self.kind].allowed_sites
    for site in sites:
      if site not in allowed:
        raise ProxyError(f"{self.kind} does not apply to site {str(site)!r}; it applies to: "
                         f"{', '.join(allowed)}")
    layers = [l for l, _ in heads]
    if Site.RESID_PRE in sites and len(set(layers)) < len(layers):
      raise ProxyError("resid_pre belongs to a layer, not a head: simplify it at one head "
                       "per layer")
    object.__setattr__(self, "heads", heads)
    object.__setattr__(self, "sites", sites)
    object.__setattr__(self, "values", tuple(int(v) for v in self.values))
    object.__setattr__(self, "options", tuple((str(k), v) for k, v in self.options))

  @property
  def layer(self) -> int | str:
    """The layer of a one-head spec; '0+1' for several heads (as in row labels)."""
    return self.heads[0][0] if len(self.heads) == 1 else "+".join(str(l) for l, _ in self.heads)

  @property
  def head(self) -> int | str:
    return self.heads[0][1] if len(self.heads) == 1 else "+".join(str(h) for _, h in self.heads)

  def to_dict(self) -> dict:
    return {"kind": self.kind, "heads": [list(h) for h in self.heads],
            "sites": [str(s) for s in self.sites], "values": list(self.values),
            "options": dict(self.options)}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ProxySpec":
    try:
      return cls(d["kind"], tuple(tuple(h) for h in d["heads"]), tuple(d["sites"]),
                 tuple(d.get("values", ())), tuple(dict(d.get("options", {})).items()))
    except (KeyError, TypeError) as e:
      raise ProxyError(f"not a proxy spec ({e})") from None

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
  """A fitted proxy: one dict of arrays per head of `heads`, each carrying a leading sweep
  axis (map or vmap over the Proxy to run one setting at a time). It is an intervention
  (`models.sites.Intervention`) on `sites` of every head of `heads`."""

  arrays: tuple[dict, ...]
  kind: str = struct.field(pytree_node=False)
  heads: tuple[Head, ...] = struct.field(pytree_node=False)
  sites: tuple[Site, ...] = struct.field(pytree_node=False)

  @property
  def targets(self) -> frozenset[Target]:
    return frozenset(target(l, h, s) for l, h in self.heads for s in self.sites)

  @property
  def first_layer(self) -> int:
    return min(l for l, _ in self.heads)

  def __call__(self, where: Target, x: jax.Array) -> jax.Array:
    layer, head, site = where
    index = next(i for i, (l, h) in enumerate(self.heads)
                 if l == layer and (head is None or h == head))
    return KINDS[self.kind].apply(self.arrays[index], site, x)

  @property
  def size(self) -> int:
    """Number of settings along the sweep axis (1 for a kind without parameters)."""
    leaves = jax.tree_util.tree_leaves(self.arrays)
    return leaves[0].shape[0] if leaves else 1

  def setting(self, index: int) -> "Proxy":
    """Sweep entry `index` alone, without the sweep axis."""
    return self.replace(arrays=jax.tree_util.tree_map(lambda a: a[index], self.arrays))


def fit(spec: ProxySpec, fit_inputs: Sequence[Mapping[str, np.ndarray]]) -> Proxy:
  """Fits every setting of `spec` at each of its heads, on what its kind `fits_on` (see the
  module docstring): `fit_inputs` holds one mapping per head of `spec.heads`."""
  kind = KINDS[spec.kind]
  if len(fit_inputs) != len(spec.heads):
    raise ProxyError(f"{len(fit_inputs)} fitting sets for {len(spec.heads)} heads")
  options = {**kind.options, **dict(spec.options)}
  arrays = tuple(jax.tree_util.tree_map(np.asarray, kind.fit(inputs, spec.values, options))
                 for inputs in fit_inputs)
  return Proxy(arrays=arrays, kind=spec.kind, heads=spec.heads, sites=spec.sites)
