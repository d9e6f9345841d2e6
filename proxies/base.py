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

A kind also declares its limits where it is registered (`ProxyKind.bounds`: what caps its
sweep, e.g. a rank within the narrowest site's width, K within the fitting vectors;
`ProxyKind.checks`: anything else), and every sweep is made by `make_spec`, which checks
them against the model (`check`): the command line, the API and the experiments know no
kind's rules. A new kind is one file here calling `register`, and its import in
`proxies/__init__.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import struct

from models.sites import Site, SiteModel, Target, target


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
  diagnostics: tuple[str, ...] = ()  # the names `diagnose` returns, for printed tables
  # Its limits, applied by `check` wherever a sweep is made (the command line, the API, the
  # experiments), so that no caller knows a kind's rules: `bounds` cap the sweep's values
  # (each a `Bound`; the tightest wins; every sweep starts at 1), `checks` are any other
  # requirement of a spec on a model (each a `Check`).
  bounds: tuple["Bound", ...] = ()
  checks: tuple["Check", ...] = ()
  # The sweep's axis label in figures (default: its name); its first word names the sweep's
  # values in every table and scan row (`sweep_name`: 'K' for "K (clusters)").
  sweep_label: str | None = None
  # The sweep the illusion scan measures it over (default: `sweep_default`), from small to
  # large; values a model does not admit are left out there.
  scan_sweep: tuple[int, ...] = ()
  # The family this kind is a chance baseline of (e.g. a random subspace for svd): the
  # scan runs it beside that family, at the same sweep and several seeds; it is no family
  # of its own (the reproduction and the family lists leave it out).
  control_of: str | None = None

  @property
  def sweep_name(self) -> str | None:
    """What its sweep values are called in a label: the first word of its axis label
    ('rank', 'K' clusters, 'k' active latents), else its sweep field, or None."""
    if self.sweep is None:
      return None
    return self.sweep_label.split()[0] if self.sweep_label else self.sweep


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


# A kind's cap on its sweep: (spec, widths, vectors) -> (largest value, why) or None where
# it sets none. `widths`: {site: width} of the spec's sites in the model; `vectors`: the
# fitting vectors per site (every non-PAD position of the fitting strings), None until known.
Bound = Callable[[ProxySpec, Mapping[Site, int], "int | None"], "tuple[int, str] | None"]
# Any other requirement of a kind on a spec and the model's widths: raises ProxyError.
Check = Callable[[ProxySpec, Mapping[Site, int]], None]


def fits_separately(spec: ProxySpec) -> bool:
  """Whether each site gets a fit of its own (the `separate` option of kinds that have one)
  rather than one fit on every site's vectors together."""
  return bool(dict(spec.options).get("separate", False))


def at_most(limit: int, why: str = "") -> Bound:
  """A fixed cap (e.g. k-means' K: its fit holds an [N, K] distance matrix)."""
  return lambda spec, widths, vectors: (limit, why)


def within_width(spec: ProxySpec, widths: Mapping[Site, int], vectors: int | None):
  """A rank: at most the narrowest site's width (a larger one would be clipped, yet labelled)."""
  narrowest = min(spec.sites, key=lambda s: widths[s])
  return widths[narrowest], (f" ({narrowest}, the narrowest site simplified, has "
                             f"{widths[narrowest]} dimensions)")


def within_vectors(spec: ProxySpec, widths: Mapping[Site, int], vectors: int | None):
  """A number of centroids or latents: at most the vectors it is fitted on (every site's
  together for a joint fit, one site's for a separate one)."""
  if vectors is None:
    return None
  n = vectors if fits_separately(spec) else vectors * len(spec.sites)
  return n, f" ({n} vectors to fit on)"


def one_width_unless_separate(spec: ProxySpec, widths: Mapping[Site, int]) -> None:
  """A joint fit stacks every site's vectors: they must be of one width."""
  if not fits_separately(spec) and len(set(widths.values())) > 1:
    raise ProxyError(
        f"a joint {spec.kind} fit needs sites of one width, but "
        f"{', '.join(f'{s} has {w}' for s, w in widths.items())} dimensions; "
        "fit each site on its own (the option separate, --separate) or choose sites of one width")


def check_heads(heads: Sequence[Head], model: SiteModel) -> None:
  """A ProxyError naming the first of `heads` the model does not have."""
  for layer, head in heads:
    if not (0 <= layer < model.n_layers and 0 <= head < model.n_heads):
      raise ProxyError(f"no head ({layer}, {head}) in a model of "
                       f"{model.n_layers} layers x {model.n_heads} heads")


def check(spec: ProxySpec, model: SiteModel, n_vectors: int | None = None) -> None:
  """Whether `model` can run `spec` as labelled: its heads exist, the model exposes its
  sites (a proxy at a site the model does not expose would never run), every value of the
  sweep lies within the kind's `bounds` (against the model's widths and, given `n_vectors`,
  the fitting vectors per site) and the kind's `checks` hold. A ProxyError otherwise,
  before anything runs."""
  kind = KINDS[spec.kind]
  check_heads(spec.heads, model)
  missing = [s for s in spec.sites if s not in model.sites]
  if missing:
    exposed = [s for s in Site if s in model.sites]
    raise ProxyError(f"{spec.kind} simplifies {', '.join(missing)}, which this model does not "
                     f"expose; it exposes: {', '.join(exposed) or 'no site'}")
  widths = {s: model.width(s) for s in spec.sites}
  for requirement in kind.checks:
    requirement(spec, widths)
  if kind.sweep is None:
    if spec.values:
      raise ProxyError(f"{spec.kind} has no sweep; it takes no values")
    return
  if not spec.values:
    raise ProxyError(f"{spec.kind} needs values of its sweep ({kind.sweep})")
  caps = [c for bound in kind.bounds if (c := bound(spec, widths, n_vectors)) is not None]
  limit, why = min(caps, key=lambda c: c[0]) if caps else (None, "")
  for value in spec.values:
    if value < 1 or (limit is not None and value > limit):
      choose = f"1..{limit}" if limit is not None else "at least 1"
      raise ProxyError(f"{kind.sweep}={value} is out of range{why}; choose {choose}")


def make_spec(model: SiteModel, kind: str, values: Sequence[int] = (), *,
              heads: Sequence[Head] | None = None, sites: Sequence[str] | None = None,
              options: Mapping[str, Any] | None = None, n_vectors: int | None = None
              ) -> ProxySpec:
  """The one validating constructor of a sweep: `kind` at each of `heads` (default: head 0
  of the last layer) on `sites` (default: the kind's), over `values` (default: the kind's
  `sweep_default`), with `options` over the kind's defaults; `check`ed against `model` (a
  `models.sites.SiteModel`) and, for a data-fitted kind, `n_vectors` fitting vectors per
  site when known. The command line, the API and the experiments all build sweeps here."""
  if kind not in KINDS:
    raise ProxyError(f"unknown proxy kind {kind!r}; choose one of: {', '.join(KINDS)}")
  known = KINDS[kind]
  options = dict(options or {})
  unknown = set(options) - set(known.options)
  if unknown:
    raise ProxyError(f"{kind} has no option {', '.join(sorted(unknown))}; its "
                     f"options: {', '.join(known.options) or 'none'}")
  values = tuple(values) or (known.sweep_default if known.sweep else ())
  heads = tuple(heads) if heads is not None else ((model.n_layers - 1, 0),)
  spec = ProxySpec(kind, heads, tuple(sites or known.sites), values,
                   tuple({**known.options, **options}.items()))
  check(spec, model, n_vectors)
  return spec
