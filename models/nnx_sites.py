"""`NNXSites`: any Flax NNX language model (`flax.nnx`) seen through the engine's interface
(`sites.SiteModel`), reached without editing the model's source.

The adapter holds the model's `nnx.GraphDef` (its structure, hashable) and is handed the
model's `nnx.State` as `params`, so `run` is a pure function of the parameters and the engine
compiles one program per model. Inside `run` the model is rebuilt (`nnx.merge`, with fresh
Variables, so a forward pass that writes to a Variable never touches the caller's state), and
each located submodule whose site is being captured or replaced is hooked for this call
only: the submodule object is given a subclass of its own class whose `__call__` applies the
intervention (`sites.intervene`) and records the capture around the original call. Hooking
the object, not the attribute that holds it, reaches it however its parent calls it (an
attribute, an `nnx.List` or dict entry, a tuple, a second reference). A submodule nobody
targets is left as it is, so a plain run is the model's own.

Locating. `locate(path) -> (layer, Site) | (layer, Fused) | None` names the site a
submodule computes from its path in the module graph, as `nnx.iter_modules` gives it:
attribute names and, for `nnx.List` / list entries, integer indices, e.g.
('layers', 1, 'attn', 'q_proj'). Supported layouts:
  - resid_pre: the site is the submodule's first argument (a block's input, [B, L, M]);
  - q, k, v, one submodule each (`nnx.Linear`, `nnx.LinearGeneral`, `nnx.Einsum`, or any
    module of the user's): its output is the site, [B, L, H, D] or [B, L, H * D];
  - q, k and v from one fused projection: `Fused(sites, axis)` says its output holds those
    sites one after another along `axis`. A 5-dimensional output has them stacked there
    (e.g. [3, B, L, H, D] with axis 0, or [B, L, 3, H, D] with axis 2); a 3- or
    4-dimensional one has them as equal chunks of that axis ([B, L, 3 * H * D] with axis -1,
    [B, L, 3 * H, D] with axis 2, or [B, L, H, 3 * D] with axis 3: per-head interleaving).
    Each site's part is then [B, L, H, D] or [B, L, H * D]. Any subset works (a fused kv);
  - pattern: the output of a submodule of the user's that normalizes the scores,
    [B, H, L, L]. Attention computed inline (`nnx.dot_product_attention`, `jax.nn.softmax`
    inside the attention's own `__call__`) has no pattern site: leave `pattern` out of
    `widths`, and the engine measures without the attention JSD (pattern-site proxy kinds
    refuse). `check` (which `from_model` runs) says so if a declared site is not located.
Every head has the same width (no grouped-query attention: k and v need as many heads as
q). The located submodules must be called through `__call__`; a model that wraps their
calls in NNX transforms (`nnx.remat`, `nnx.scan`, `nnx.vmap`) inside its forward pass is not
supported, and layers stacked by `nnx.scan` into one module have no per-layer paths.

`forward(model, tokens_BxL)` (default `model(tokens_BxL)`) must return logits [B, L, V];
a model with dropout is split in eval mode (`model.eval()`). Reading out a few positions
takes them from the full logits. `weights(params, layer, head) -> {'query': [M, D],
'key': [M, D], ...}` enables data-independent proxies (weight_svd). Keep `locate`,
`weights` and `forward` module-level functions: the adapter hashes by them, and a new
lambda each time is a new model to the program cache.

Example (a model whose layers sit in an `nnx.List` and whose attention has a Softmax
submodule of its own):

  class Softmax(nnx.Module):
    def __call__(self, scores_BxHxLxL):
      return jax.nn.softmax(scores_BxHxLxL, axis=-1)

  SITE_OF = {'q_proj': Site.Q, 'k_proj': Site.K, 'v_proj': Site.V, 'softmax': Site.PATTERN}

  def locate(path):
    if len(path) == 2 and path[0] == 'layers':
      return path[1], Site.RESID_PRE  # a layer's input
    if len(path) == 4 and path[0] == 'layers' and path[2] == 'attn' and path[3] in SITE_OF:
      return path[1], SITE_OF[path[3]]
    return None

  def weights(state, layer, head):  # q_proj, k_proj: nnx.Linear(M, H * D)
    attn = state['layers'][layer]['attn']
    cut = lambda w: w[...].reshape(w.shape[0], N_HEADS, -1)[:, head]
    return {'query': cut(attn['q_proj']['kernel']), 'key': cut(attn['k_proj']['kernel'])}

  model = MyLM(..., rngs=nnx.Rngs(0))
  adapter, state = NNXSites.from_model(
      model, locate, n_layers=2, n_heads=N_HEADS, weights=weights,
      widths={Site.RESID_PRE: D_MODEL, Site.Q: D_HEAD, Site.K: D_HEAD, Site.V: D_HEAD,
              Site.PATTERN: SEQ_LEN})
  run = api.Run(task, adapter, state)
  result = run.evaluate(run.fit('svd', (1, 4), heads=[(1, 0)]))

The adapter of a second split of the same model is equal to the first and hashes the same,
so it finds the program the first one compiled.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Collection, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from models.sites import Intervention, Site, Target, head_slice, intervene

_QKV = (Site.Q, Site.K, Site.V)
_HOOK = "_nnx_sites_hook"  # the per-call hook, kept on the hooked submodule object


@dataclasses.dataclass(frozen=True)
class Fused:
  """Several of q, k, v computed by one submodule: its output holds `sites`, in this order,
  along `axis` (stacked there in a 5-dimensional output, equal chunks of it otherwise)."""

  sites: tuple[Site, ...]
  axis: int

  def __post_init__(self):
    sites = tuple(Site(s) for s in self.sites)
    if not sites or len(set(sites)) != len(sites) or any(s not in _QKV for s in sites):
      raise ValueError(f"Fused sites must be distinct ones of q, k, v; got {self.sites}")
    object.__setattr__(self, "sites", sites)
    object.__setattr__(self, "axis", int(self.axis))

  def split(self, y: jax.Array) -> list[jax.Array]:
    axis = self.axis % y.ndim
    n = len(self.sites)
    if y.ndim == 5:
      if y.shape[axis] != n:
        raise ValueError(f"a fused {'/'.join(self.sites)} output {y.shape} should stack "
                         f"{n} sites along axis {self.axis}")
      return [jnp.take(y, i, axis=axis) for i in range(n)]
    if y.ndim not in (3, 4) or y.shape[axis] % n:
      raise ValueError(f"a fused {'/'.join(self.sites)} output {y.shape} should hold {n} "
                       f"equal chunks along axis {self.axis}")
    return jnp.split(y, n, axis=axis)

  def join(self, parts: list[jax.Array], ndim: int) -> jax.Array:
    axis = self.axis % ndim
    return jnp.stack(parts, axis) if ndim == 5 else jnp.concatenate(parts, axis)


Located = tuple[int, Site | Fused]


@functools.cache
def _hooked(cls: type) -> type:
  """`cls` with a `__call__` that defers to the hook of the object it is called on. Made
  once per class and kept: the class itself is stateless, each run's hooks live on that
  run's own (freshly merged) objects."""

  def __call__(self, *args, **kwargs):
    call = super(hooked, self).__call__
    hook = self.__dict__.get(_HOOK)
    return call(*args, **kwargs) if hook is None else hook(call, args, kwargs)

  hooked = type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})
  return hooked


def _sites_of(found: Located) -> tuple[Site, ...]:
  kind = found[1]
  return kind.sites if isinstance(kind, Fused) else (Site(kind),)


@dataclasses.dataclass(frozen=True)
class NNXSites:
  """Any Flax NNX language model through the engine's interface (see the module docstring).

  `graphdef`: the model's `nnx.GraphDef`; `params` given to `run` and `weights`: its
  `nnx.State` (or a tuple of States, as `nnx.split(model, nnx.Param, ...)` gives them).
  `widths` maps each site exposed to its width: D for q, k and v, L (positions) for the
  pattern, M for the stream."""

  graphdef: nnx.GraphDef
  locate: Callable[[tuple[str | int, ...]], Located | None]
  n_layers: int
  n_heads: int
  widths: Mapping[Site, int]  # the sites exposed, and their widths
  weights: Callable[[Any, int, int], dict[str, jax.Array]] | None = None
  forward: Callable[[nnx.Module, jax.Array], jax.Array] | None = None

  def __post_init__(self):
    # Kept as sorted pairs, so that the adapter hashes: the engine keeps one compiled
    # program per model, and a second evaluation of the same model compiles nothing.
    object.__setattr__(self, "widths", tuple(sorted((Site(s), int(w))
                                                    for s, w in dict(self.widths).items())))

  @classmethod
  def from_model(cls, model: nnx.Module, locate, n_layers: int, n_heads: int,
                 widths: Mapping[Site, int], weights=None, forward=None
                 ) -> tuple[NNXSites, nnx.State]:
    """(adapter, params) of a model: its graph and its state (`nnx.split`), after `check`
    that every site of `widths` is located in every layer."""
    graphdef, state = nnx.split(model)
    adapter = cls(graphdef, locate, n_layers, n_heads, widths, weights, forward)
    adapter.check(model)
    return adapter, state

  @property
  def sites(self) -> frozenset[Site]:
    return frozenset(s for s, _ in self.widths)

  def width(self, site: Site) -> int:
    return dict(self.widths)[Site(site)]

  def located(self, model: nnx.Module) -> dict[tuple[int, Site], tuple[str | int, ...]]:
    """(layer, site) -> the path of the submodule that computes it. Two submodules located
    at the same (layer, site) are refused: which one the engine saw would be a guess."""
    out: dict[tuple[int, Site], tuple[str | int, ...]] = {}
    for path, _ in nnx.iter_modules(model):
      found = self.locate(tuple(path))
      if found is None:
        continue
      for site in _sites_of(found):
        key = (int(found[0]), site)
        if key in out:
          raise ValueError(f"NNXSites: both {out[key]} and {tuple(path)} are located as "
                           f"{site} of layer {key[0]}")
        out[key] = tuple(path)
    return out

  def check(self, model: nnx.Module) -> None:
    """Raises ValueError unless `locate` names a submodule for every site of `widths` in
    every layer."""
    located = self.located(model)
    for site in sorted(self.sites):
      missing = [l for l in range(self.n_layers) if (l, site) not in located]
      if missing:
        inline = (" (attention computed inline has no pattern site: leave it out of "
                  "widths)" if site is Site.PATTERN else "")
        raise ValueError(f"NNXSites: {site} is in widths, but locate names no submodule "
                         f"computing it in layer(s) {missing}{inline}")

  def head_weights(self, params, layer: int, head: int) -> dict[str, jax.Array]:
    if self.weights is None:
      raise ValueError("this model does not expose its head weights (NNXSites.weights)")
    return self.weights(params, layer, head)

  def _heads(self, site: Site, y: jax.Array) -> jax.Array:
    """A site's all-heads value as `intervene` wants it, from the submodule's output."""
    if not site.per_head:
      return y
    if site is Site.PATTERN:
      if y.ndim != 4 or y.shape[1] != self.n_heads:
        raise ValueError(f"NNXSites: a pattern should be [B, H={self.n_heads}, L, L], "
                         f"got {y.shape}")
      return y
    if y.ndim == 3:  # [B, L, H * D]
      y = y.reshape(*y.shape[:2], self.n_heads, -1)
    if y.ndim != 4 or y.shape[2] != self.n_heads:
      raise ValueError(f"NNXSites: {site} should be [B, L, H={self.n_heads}, D] or "
                       f"[B, L, H * D], got {y.shape}")
    return y

  def run(self, params, tokens_BxL, intervention: Intervention | None = None,
          capture: Collection[Target] = (), readout=None):
    capture = frozenset(capture)
    captured: dict[Target, jax.Array] = {}
    touched = capture | (intervention.targets if intervention is not None else frozenset())
    wanted = {(t[0], Site(t[2])) for t in touched}
    fired: set[tuple[int, Site]] = set()
    absent = sorted({s for _, s in wanted} - self.sites)
    if absent:
      raise ValueError(f"NNXSites: this model has no {', '.join(absent)} site (its sites: "
                       f"{', '.join(sorted(self.sites))})")

    def apply(layer: int, site: Site, y: jax.Array) -> jax.Array:
      """The submodule's output `y` with the targeted heads replaced, recorded as the rest
      of the model will see it."""
      if (layer, site) not in wanted:
        return y
      fired.add((layer, site))
      y_all = intervene(intervention, layer, site, self._heads(site, y))
      for t in capture:
        if t[0] == layer and t[2] == site:
          captured[t] = head_slice(site, y_all, t[1])
      return y_all.reshape(y.shape)

    def hook_for(layer: int, kind: Site | Fused):
      def hook(call, args, kwargs):
        if isinstance(kind, Fused):
          y = call(*args, **kwargs)
          parts = [apply(layer, s, p) for s, p in zip(kind.sites, kind.split(y))]
          return kind.join(parts, y.ndim)
        if kind is Site.RESID_PRE:  # the block's input
          return call(apply(layer, kind, args[0]), *args[1:], **kwargs)
        return apply(layer, kind, call(*args, **kwargs))
      return hook

    states = params if isinstance(params, tuple) else (params,)
    # Fresh Variables: whatever the forward pass writes stays inside this call.
    model = nnx.merge(self.graphdef, *states, copy=True)
    hooked = []
    # Listed before any is hooked: the graph is walked by its nodes' types.
    for path, module in list(nnx.iter_modules(model)) if wanted else ():
      found = self.locate(tuple(path))
      if found is None or not any((int(found[0]), s) in wanted for s in _sites_of(found)):
        continue
      kind = found[1] if isinstance(found[1], Fused) else Site(found[1])
      object.__setattr__(module, _HOOK, hook_for(int(found[0]), kind))
      original = type(module)
      object.__setattr__(module, "__class__", _hooked(original))
      hooked.append((module, original))
    try:
      logits = (self.forward(model, tokens_BxL) if self.forward is not None
                else model(tokens_BxL))
    finally:
      # The objects are this call's own; restoring them keeps that true should they ever
      # outlive it.
      for module, original in hooked:
        object.__setattr__(module, "__class__", original)
        object.__delattr__(module, _HOOK)
    missing = wanted - fired
    if missing:
      raise ValueError(f"NNXSites: no located submodule computed {sorted(missing)} "
                       f"(layer, site) during the forward pass; check `locate`")
    if readout is not None:
      logits = logits[readout[0], readout[1]]
    return logits, captured
