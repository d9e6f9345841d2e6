"""A small decoder-only Transformer whose attention exposes named sites.

Tensor names carry their shapes: B batch, L positions, M d_model, H heads, D d_head,
F d_mlp, V vocabulary.

Sites (`models/sites.py`, TransformerLens' names) are the places where an intervention may
replace an activation or where it can be captured:
  resid_pre  - the residual stream entering a block           [B, L, M]
  q, k, v    - one head's queries, keys, values                [B, L, D]
  pattern    - one head's attention distribution (query, key)  [B, L, L]
Capture is Linen's `sow` into the 'intermediates' collection: it records only when the
caller makes that collection mutable, and compiles to nothing otherwise.

An intervention (`sites.Intervention`) names its targets, (layer, head, site) triples, and
replaces each one's value; `proxies.Proxy` is one. Attention is always recomputed from the
(possibly replaced) queries and keys, so a proxy changes everything downstream of its sites
and nothing upstream. `TransformerSites` is this model seen through the engine's interface
(`sites.SiteModel`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.sites import HEAD_AXIS, Intervention, Site, Target, head_slice, intervene


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  seq_len: int = 128  # learned absolute positions
  n_layers: int = 2
  n_heads: int = 1
  d_model: int = 64
  d_head: int = 64
  d_mlp: int = 256
  dtype: str = "float32"  # compute dtype; parameters are always float32

  def __post_init__(self):
    for name in ("vocab_size", "seq_len", "n_layers", "n_heads", "d_model", "d_head", "d_mlp"):
      if not 1 <= getattr(self, name) <= 1 << 16:
        raise ValueError(f"{name} must be in 1..{1 << 16}, got {getattr(self, name)}")
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"unknown dtype {self.dtype!r}; choose one of: float32, bfloat16")

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict) -> "ModelConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise ValueError(f"unknown model config keys: {sorted(unknown)}")
    return cls(**d)


def _intervene(module: nn.Module, site: Site, x: jax.Array,
               intervention: Intervention | None) -> jax.Array:
  """Replaces the targeted heads' slices of `x` (all heads), then captures the result, so a
  capture shows what the rest of the model actually sees."""
  x = intervene(intervention, module.layer, site, x)
  module.sow("intermediates", site.value, x)
  return x


class Attention(nn.Module):
  cfg: ModelConfig
  layer: int

  @nn.compact
  def __call__(self, x_BxLxM: jax.Array, intervention=None, readout=None) -> jax.Array:
    c = self.cfg
    dtype = jnp.dtype(c.dtype)
    project = lambda name: nn.DenseGeneral((c.n_heads, c.d_head), use_bias=False,
                                           dtype=dtype, name=name)
    # Sub-steps, each a named site: queries, keys, values -> scores -> pattern -> mix.
    q_BxLxHxD = _intervene(self, Site.Q, project("query")(x_BxLxM), intervention)
    k_BxLxHxD = _intervene(self, Site.K, project("key")(x_BxLxM), intervention)
    v_BxLxHxD = _intervene(self, Site.V, project("value")(x_BxLxM), intervention)

    scores_BxHxLxL = jnp.einsum("bqhd,bkhd->bhqk", q_BxLxHxD, k_BxLxHxD)
    scores_BxHxLxL = scores_BxHxLxL.astype(jnp.float32) / jnp.sqrt(c.d_head)
    length = x_BxLxM.shape[1]
    causal_LxL = jnp.tril(jnp.ones((length, length), bool))
    scores_BxHxLxL = jnp.where(causal_LxL, scores_BxHxLxL, -1e30)
    pattern_BxHxLxL = jax.nn.softmax(scores_BxHxLxL, axis=-1)
    pattern_BxHxLxL = _intervene(self, Site.PATTERN, pattern_BxHxLxL, intervention)

    # The mix as one [L, L] @ [L, D] product per head: written as an einsum over
    # [B, L, H, D] values, XLA's CPU backend copied v, the pattern and z into other layouts
    # on every call (1.6 of 11.8 ms per setting of a sweep on a 256 x 64 batch, measured).
    z_BxHxLxD = jnp.matmul(pattern_BxHxLxL.astype(dtype), v_BxLxHxD.transpose(0, 2, 1, 3))
    z_BxLxHxD = z_BxHxLxD.transpose(0, 2, 1, 3)
    # The output projection is position-wise: with `readout`, only the positions read out.
    z_xHxD = z_BxLxHxD if readout is None else z_BxLxHxD[readout[0], readout[1]]
    return nn.DenseGeneral(c.d_model, axis=(-2, -1), use_bias=False, dtype=dtype,
                           name="out")(z_xHxD)


class Block(nn.Module):
  cfg: ModelConfig
  layer: int

  @nn.compact
  def __call__(self, x_BxLxM: jax.Array, intervention=None, readout=None) -> jax.Array:
    """[B, L, M] -> [B, L, M]; with `readout` = (rows_T, cols_T), the attention's output
    projection and the MLP run only at those positions and the block returns [T, M]
    (attention itself still covers every query: later positions read earlier ones)."""
    c = self.cfg
    dtype = jnp.dtype(c.dtype)
    x_BxLxM = _intervene(self, Site.RESID_PRE, x_BxLxM, intervention)
    attended_xM = Attention(c, self.layer, name="attention")(
        nn.LayerNorm(dtype=dtype, name="ln_attention")(x_BxLxM), intervention, readout)
    x_xM = (x_BxLxM if readout is None else x_BxLxM[readout[0], readout[1]]) + attended_xM
    h_xM = nn.LayerNorm(dtype=dtype, name="ln_mlp")(x_xM)
    h_xF = nn.gelu(nn.Dense(c.d_mlp, dtype=dtype, name="mlp_in")(h_xM))
    return x_xM + nn.Dense(c.d_model, dtype=dtype, name="mlp_out")(h_xF)


class Transformer(nn.Module):
  """tokens int[B, L] -> logits float32[B, L, V]; `intervention` replaces its targets.

  `readout` = (rows_T, cols_T), two int[T] arrays, asks for the logits at those T positions
  only, float32[T, V]: every attention layer still runs at every position (later positions
  read earlier ones), but the last block's attention output projection and MLP, the
  final LayerNorm and the unembedding run only where they are read. Evaluation that scores a few positions per string pays for those."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_BxL: jax.Array, intervention=None, readout=None) -> jax.Array:
    c = self.cfg
    dtype = jnp.dtype(c.dtype)
    init = nn.initializers.normal(0.02)
    embed = nn.Embed(c.vocab_size, c.d_model, embedding_init=init, name="embed")
    positions_LxM = self.param("positions", init, (c.seq_len, c.d_model))
    length = tokens_BxL.shape[1]
    x_BxLxM = (embed(tokens_BxL) + positions_LxM[:length]).astype(dtype)
    for layer in range(c.n_layers):
      last = layer == c.n_layers - 1
      x_BxLxM = Block(c, layer, name=f"block_{layer}")(x_BxLxM, intervention,
                                                      readout if last else None)
    x_xM = nn.LayerNorm(dtype=dtype, name="ln_final")(x_BxLxM)  # [B, L, M] or [T, M]
    logits_xV = nn.Dense(c.vocab_size, dtype=dtype, name="unembed")(x_xM)
    return logits_xV.astype(jnp.float32)


def init_params(cfg: ModelConfig, seed: int) -> Any:
  tokens = jnp.zeros((1, cfg.seq_len), jnp.int32)
  return Transformer(cfg).init(jax.random.key(seed), tokens)["params"]


def capture(cfg: ModelConfig, params: Any, tokens_BxL: jax.Array, layer: int,
            site: str) -> jax.Array:
  """The activation at `site` of block `layer` (all heads: [B, L, H, D] for q/k/v,
  [B, H, L, L] for pattern, [B, L, M] for resid_pre), read through `TransformerSites`,
  as every capture is (`proxies.capture` batches it for any `sites.SiteModel`)."""
  site = Site(site)
  heads = range(cfg.n_heads) if site.per_head else [None]
  targets = [(layer, head, site) for head in heads]
  _, captured = TransformerSites(cfg).run(params, tokens_BxL, capture=targets)
  if not site.per_head:
    return captured[targets[0]]
  return jnp.stack([captured[t] for t in targets], axis=HEAD_AXIS[site])


def _captured(intermediates: dict, layer: int, site: Site) -> jax.Array:
  block = intermediates[f"block_{layer}"]
  return (block if site is Site.RESID_PRE else block["attention"])[site.value][0]


def head_weights(params: Any, layer: int, head: int) -> dict[str, jax.Array]:
  """One head's projections: query, key, value [M, D] and out [D, M]."""
  attention = params[f"block_{layer}"]["attention"]
  return {"query": attention["query"]["kernel"][:, head],
          "key": attention["key"]["kernel"][:, head],
          "value": attention["value"]["kernel"][:, head],
          "out": attention["out"]["kernel"][head]}


@dataclasses.dataclass(frozen=True)
class TransformerSites:
  """The built-in Transformer through the engine's interface (`sites.SiteModel`): every
  site, captured by `sow`, read-out slots computed at those positions only."""

  cfg: ModelConfig
  sites = frozenset(Site)

  @property
  def n_layers(self) -> int:
    return self.cfg.n_layers

  @property
  def n_heads(self) -> int:
    return self.cfg.n_heads

  def width(self, site: Site) -> int:
    return self.cfg.d_model if Site(site) is Site.RESID_PRE else self.cfg.d_head

  def run(self, params, tokens_BxL, intervention: Intervention | None = None,
          capture: Collection[Target] = (), readout=None):
    logits, state = Transformer(self.cfg).apply({"params": params}, tokens_BxL,
                                                intervention=intervention, readout=readout,
                                                mutable=["intermediates"])
    inter = state["intermediates"]
    return logits, {t: head_slice(t[2], _captured(inter, t[0], t[2]), t[1]) for t in capture}

  def head_weights(self, params, layer: int, head: int) -> dict[str, jax.Array]:
    return head_weights(params, layer, head)
