"""Sites: the named activations an intervention may replace or a caller may capture, and
the small interface through which the evaluation engine talks to any model.

Sites are a closed vocabulary (TransformerLens' names). A *target* is one site at one place
of a model: `(layer, head, site)`, with head None for the residual stream, which no head
owns. The engine needs three things of a model, whatever its parameter layout (`SiteModel`):
run it with an intervention on some targets, capture the value of some targets as the rest
of the model saw it, and (optionally) read the logits at a few positions only. The built-in
Transformer implements it (`transformer.TransformerSites`); `LinenSites` implements it for a
Flax Linen model written without this project in mind, by intercepting its submodules'
calls (`flax.linen.intercept_methods`); `nnx_sites.NNXSites` does the same for a Flax NNX
model, by hooking its located submodules for the length of a run.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp


class Site(enum.StrEnum):
  RESID_PRE = "resid_pre"  # the residual stream entering a block  [B, L, M]
  Q = "q"  # one head's queries                                         [B, L, D]
  K = "k"  # one head's keys                                            [B, L, D]
  V = "v"  # one head's values                                          [B, L, D]
  PATTERN = "pattern"  # one head's attention distribution (query, key) [B, L, L]

  @property
  def per_head(self) -> bool:
    return self is not Site.RESID_PRE


# Where the heads are in a site's all-heads tensor: [B, L, H, D] for q/k/v, [B, H, L, L] for
# the pattern.
HEAD_AXIS = {Site.Q: 2, Site.K: 2, Site.V: 2, Site.PATTERN: 1}

Target = tuple[int, int | None, Site]  # (layer, head or None for resid_pre, site)


def target(layer: int, head: int | None, site: str) -> Target:
  """The target of `site` at (layer, head); the head is dropped for the residual stream."""
  site = Site(site)
  return (layer, head if site.per_head else None, site)


class Intervention(Protocol):
  """Replaces the value of each of its `targets` (static) as the model computes it: x is
  one head's slice ([B, L, D] or [B, L, L]) or the residual stream ([B, L, M])."""

  targets: frozenset[Target]

  def __call__(self, target: Target, x: jax.Array) -> jax.Array:
    ...


def intervene(intervention: Intervention | None, layer: int, site: Site,
              x: jax.Array) -> jax.Array:
  """`x`, the all-heads value of `site` in block `layer` ([B, L, H, D], [B, H, L, L] or
  [B, L, M]), with every targeted head's slice replaced by what `intervention` returns."""
  if intervention is None:
    return x
  if not site.per_head:
    t = (layer, None, site)
    return intervention(t, x).astype(x.dtype) if t in intervention.targets else x
  axis = HEAD_AXIS[site]
  chosen = {t[1]: t for t in intervention.targets if t[0] == layer and t[2] == site}
  if not chosen:
    return x
  # Rebuilt from its heads (not updated in place): a head the intervention replaces
  # without reading leaves nothing that uses x's slice, and where every head is replaced
  # so, whatever computed x is dead code the compiler removes.
  heads = [jax.lax.index_in_dim(x, h, axis, keepdims=False) for h in range(x.shape[axis])]
  return jnp.stack([intervention(chosen[h], x_h).astype(x.dtype) if h in chosen else x_h
                    for h, x_h in enumerate(heads)], axis)


def head_slice(site: Site, x: jax.Array, head: int | None) -> jax.Array:
  """One head's slice of an all-heads value (the residual stream as it is)."""
  return x if not site.per_head else jnp.take(x, head, axis=HEAD_AXIS[site])


class SiteModel(Protocol):
  """What the evaluation engine needs of a model.

  n_layers, n_heads: where targets may be; sites: the sites it exposes; width(site): the
  last dimension of a head's (or the stream's) vectors at `site`."""

  n_layers: int
  n_heads: int
  sites: frozenset[Site]

  def width(self, site: Site) -> int:
    ...

  def run(self, params: Any, tokens_BxL: jax.Array, intervention: Intervention | None = None,
          capture: Collection[Target] = (), readout: tuple[jax.Array, jax.Array] | None = None
          ) -> tuple[jax.Array, dict[Target, jax.Array]]:
    """(logits, captured): logits [B, L, V], or [T, V] at `readout` = (rows_T, cols_T);
    captured maps each target of `capture` to its value as the rest of the model saw it
    (after the intervention), one head's slice."""
    ...

  def head_weights(self, params: Any, layer: int, head: int) -> dict[str, jax.Array]:
    """One head's projections, query and key [M, D] at least (for data-independent
    proxies); a model that cannot say raises ValueError."""
    ...


@dataclasses.dataclass(frozen=True)
class LinenSites:
  """Any Flax Linen language model, reached through its submodules' calls.

  `locate(path)` says which site a submodule computes, from its path in the module tree
  (e.g. ('layers_1', 'attn', 'q_proj')): (layer, Site) or None. For q, k and v the
  submodule's output is the site, laid out [B, L, H, D] or [B, L, H * D]; for the pattern,
  [B, H, L, L]; for resid_pre, the site is the submodule's first argument (a block's input).
  Nothing in the model changes: calls are intercepted (`flax.linen.intercept_methods`) while
  the engine runs it, and only while a target is being captured or replaced.

  `module.apply({'params': params}, tokens_BxL)` must return logits [B, L, V]. Reading out
  a few positions takes them from the full logits (the model has no cheaper way). `weights`
  (params, layer, head) -> {'query': [M, D], 'key': [M, D]} enables data-independent
  proxies."""

  module: nn.Module
  locate: Callable[[tuple[str, ...]], tuple[int, Site] | None]
  n_layers: int
  n_heads: int
  widths: Mapping[Site, int]  # the sites exposed, and their widths
  weights: Callable[[Any, int, int], dict[str, jax.Array]] | None = None

  def __post_init__(self):
    # Kept as sorted pairs, so that the adapter hashes: the engine keeps one compiled
    # program per model, and a second evaluation of the same model compiles nothing.
    object.__setattr__(self, "widths", tuple(sorted((Site(s), int(w))
                                                    for s, w in dict(self.widths).items())))

  @property
  def sites(self) -> frozenset[Site]:
    return frozenset(s for s, _ in self.widths)

  def width(self, site: Site) -> int:
    return dict(self.widths)[Site(site)]

  def head_weights(self, params, layer: int, head: int) -> dict[str, jax.Array]:
    if self.weights is None:
      raise ValueError("this model does not expose its head weights (LinenSites.weights)")
    return self.weights(params, layer, head)

  def run(self, params, tokens_BxL, intervention=None, capture=(), readout=None):
    capture = frozenset(capture)
    captured: dict[Target, jax.Array] = {}
    touched = capture | (intervention.targets if intervention is not None else frozenset())

    def wanted(layer: int, site: Site) -> bool:
      return any(t[0] == layer and t[2] == site for t in touched)

    def record(layer: int, site: Site, x: jax.Array) -> None:
      for t in capture:
        if t[0] == layer and t[2] == site:
          captured[t] = head_slice(site, x, t[1])

    def interceptor(next_fun, args, kwargs, context):
      found = (self.locate(tuple(context.module.path))
               if context.method_name == "__call__" else None)
      if found is None or not wanted(*found):
        return next_fun(*args, **kwargs)
      layer, site = found[0], Site(found[1])
      if not site.per_head:  # the block's input
        x = intervene(intervention, layer, site, args[0])
        record(layer, site, x)
        return next_fun(x, *args[1:], **kwargs)
      y = next_fun(*args, **kwargs)
      fused = site is not Site.PATTERN and y.ndim == 3  # [B, L, H * D]
      y_all = y.reshape(*y.shape[:2], self.n_heads, -1) if fused else y
      y_all = intervene(intervention, layer, site, y_all)
      record(layer, site, y_all)
      return y_all.reshape(y.shape) if fused else y_all

    with nn.intercept_methods(interceptor):
      logits = self.module.apply({"params": params}, tokens_BxL)
    if readout is not None:
      logits = logits[readout[0], readout[1]]
    return logits, captured
