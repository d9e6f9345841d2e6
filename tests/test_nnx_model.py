"""Bring your own NNX model: a Flax NNX language model written without this project in mind
(layers in an `nnx.List`, q/k/v projections laid out several ways, its own module graph),
fitted and evaluated through `models.nnx_sites.NNXSites`, gives the same numbers as the
built-in Transformer it equals."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models import transformer
from models.nnx_sites import Fused, NNXSites
from models.sites import Site
from pipeline import api
from tests import test_own_model as own
from tests.test_own_model import CFG, Task

M, H, D = CFG.d_model, CFG.n_heads, CFG.d_head

# How the user's attention computes its queries, keys and values, and what the located
# submodule outputs:
#   separate     three nnx.Linear(M, H * D)               [B, L, H * D] each
#   general      three nnx.LinearGeneral(M, (H, D))       [B, L, H, D] each
#   einsum       one nnx.Einsum('blm,smhd->sblhd')         [3, B, L, H, D]
#   flat         one nnx.Linear(M, 3 * H * D)              [B, L, 3 * H * D]
#   interleaved  one nnx.LinearGeneral(M, (H, 3 * D))      [B, L, H, 3 * D] (per head)
LAYOUTS = ("separate", "general", "einsum", "flat", "interleaved")
QKV = (Site.Q, Site.K, Site.V)
FUSED = {"einsum": Fused(QKV, 0), "flat": Fused(QKV, -1), "interleaved": Fused(QKV, 3)}


class Softmax(nnx.Module):
  """The user's attention normalization, a module of its own: so the pattern is a site."""

  def __call__(self, scores_BxHxLxL):
    return jax.nn.softmax(scores_BxHxLxL, axis=-1)


class SelfAttention(nnx.Module):
  def __init__(self, layout: str, inline: bool, rngs: nnx.Rngs):
    self.layout, self.inline = layout, inline
    if layout in ("separate", "general"):
      out = H * D if layout == "separate" else (H, D)
      make = nnx.Linear if layout == "separate" else nnx.LinearGeneral
      self.q_proj = make(M, out, use_bias=False, rngs=rngs)
      self.k_proj = make(M, out, use_bias=False, rngs=rngs)
      self.v_proj = make(M, out, use_bias=False, rngs=rngs)
    elif layout == "einsum":
      self.qkv = nnx.Einsum("blm,smhd->sblhd", (3, M, H, D), rngs=rngs)
    elif layout == "flat":
      self.qkv = nnx.Linear(M, 3 * H * D, use_bias=False, rngs=rngs)
    else:
      self.qkv = nnx.LinearGeneral(M, (H, 3 * D), use_bias=False, rngs=rngs)
    if not inline:
      self.softmax = Softmax()
    self.o_proj = nnx.Linear(H * D, M, use_bias=False, rngs=rngs)

  def heads(self, x_BxLxM):
    """(q, k, v), each [B, L, H, D]."""
    b, l, _ = x_BxLxM.shape
    if self.layout == "separate":
      return [p(x_BxLxM).reshape(b, l, H, D) for p in (self.q_proj, self.k_proj, self.v_proj)]
    if self.layout == "general":
      return [p(x_BxLxM) for p in (self.q_proj, self.k_proj, self.v_proj)]
    y = self.qkv(x_BxLxM)
    if self.layout == "einsum":
      return [y[0], y[1], y[2]]
    if self.layout == "flat":
      return [p.reshape(b, l, H, D) for p in jnp.split(y, 3, axis=-1)]
    return jnp.split(y, 3, axis=-1)

  def __call__(self, x_BxLxM):
    b, l, _ = x_BxLxM.shape
    q_BxLxHxD, k_BxLxHxD, v_BxLxHxD = self.heads(x_BxLxM)
    causal_LxL = jnp.tril(jnp.ones((l, l), bool))
    if self.inline:  # no pattern site: the softmax happens inside the library call
      z_BxLxHxD = nnx.dot_product_attention(q_BxLxHxD, k_BxLxHxD, v_BxLxHxD,
                                            mask=causal_LxL[None, None])
    else:
      scores_BxHxLxL = jnp.einsum("bqhd,bkhd->bhqk", q_BxLxHxD, k_BxLxHxD) / jnp.sqrt(D)
      scores_BxHxLxL = jnp.where(causal_LxL, scores_BxHxLxL, -1e30)
      z_BxLxHxD = jnp.einsum("bhqk,bkhd->bqhd", self.softmax(scores_BxHxLxL), v_BxLxHxD)
    return self.o_proj(z_BxLxHxD.reshape(b, l, H * D))


class Layer(nnx.Module):
  def __init__(self, layout: str, inline: bool, rngs: nnx.Rngs):
    self.norm1 = nnx.LayerNorm(M, rngs=rngs)
    self.attn = SelfAttention(layout, inline, rngs)
    self.norm2 = nnx.LayerNorm(M, rngs=rngs)
    self.up = nnx.Linear(M, CFG.d_mlp, rngs=rngs)
    self.down = nnx.Linear(CFG.d_mlp, M, rngs=rngs)

  def __call__(self, x_BxLxM):
    x_BxLxM = x_BxLxM + self.attn(self.norm1(x_BxLxM))
    return x_BxLxM + self.down(nnx.gelu(self.up(self.norm2(x_BxLxM))))


class TinyLM(nnx.Module):
  """A user's language model: tokens [B, L] -> logits [B, L, V]."""

  def __init__(self, layout: str = "separate", inline: bool = False, *, rngs: nnx.Rngs):
    self.wte = nnx.Embed(CFG.vocab_size, M, rngs=rngs)
    self.wpe = nnx.Param(jnp.zeros((CFG.seq_len, M)))
    self.layers = nnx.List([Layer(layout, inline, rngs) for _ in range(CFG.n_layers)])
    self.norm_f = nnx.LayerNorm(M, rngs=rngs)
    self.lm_head = nnx.Linear(M, CFG.vocab_size, rngs=rngs)

  def __call__(self, tokens_BxL):
    x_BxLxM = self.wte(tokens_BxL) + self.wpe[:tokens_BxL.shape[1]]
    for layer in self.layers:
      x_BxLxM = layer(x_BxLxM)
    return self.lm_head(self.norm_f(x_BxLxM))


SITE_OF = {"q_proj": Site.Q, "k_proj": Site.K, "v_proj": Site.V, "softmax": Site.PATTERN}


def locate(layout, path):
  """The adapter the user writes: which site each submodule computes."""
  if len(path) == 2 and path[0] == "layers":
    return path[1], Site.RESID_PRE  # a layer's input
  if len(path) == 4 and path[0] == "layers" and path[2] == "attn":
    site = FUSED.get(layout) if path[3] == "qkv" else SITE_OF.get(path[3])
    return (path[1], site) if site else None
  return None


# One function per layout, made once: the adapter hashes by it.
LOCATE = {layout: functools.partial(locate, layout) for layout in LAYOUTS}


def weights(state, layer, head):
  """Head weights of the separate layout: columns of its [M, H * D] kernels."""
  attn = state["layers"][layer]["attn"]
  cut = lambda w: w[...].reshape(M, H, D)[:, head]
  return {"query": cut(attn["q_proj"]["kernel"]), "key": cut(attn["k_proj"]["kernel"])}


def user_state(params, layout):
  """The built-in Transformer's parameters in the user's layout, as a pure dict."""
  out = {"wte": {"embedding": params["embed"]["embedding"]}, "wpe": params["positions"],
         "norm_f": params["ln_final"], "lm_head": params["unembed"], "layers": {}}
  for i in range(CFG.n_layers):
    block, attention = params[f"block_{i}"], params[f"block_{i}"]["attention"]
    q, k, v = (attention[n]["kernel"] for n in ("query", "key", "value"))  # [M, H, D]
    flat = lambda w: w.reshape(M, H * D)
    attn = {
        "separate": lambda: {"q_proj": {"kernel": flat(q)}, "k_proj": {"kernel": flat(k)},
                             "v_proj": {"kernel": flat(v)}},
        "general": lambda: {"q_proj": {"kernel": q}, "k_proj": {"kernel": k},
                            "v_proj": {"kernel": v}},
        "einsum": lambda: {"qkv": {"kernel": jnp.stack([q, k, v])}},
        "flat": lambda: {"qkv": {"kernel": jnp.concatenate([flat(q), flat(k), flat(v)], -1)}},
        "interleaved": lambda: {"qkv": {"kernel": jnp.concatenate([q, k, v], -1)}},
    }[layout]()
    attn["o_proj"] = {"kernel": attention["out"]["kernel"].reshape(H * D, M)}
    out["layers"][i] = {"norm1": block["ln_attention"], "norm2": block["ln_mlp"],
                        "up": block["mlp_in"], "down": block["mlp_out"], "attn": attn}
  return out


ALL_SITES = {Site.RESID_PRE: M, Site.Q: D, Site.K: D, Site.V: D, Site.PATTERN: CFG.seq_len}
NO_PATTERN = {s: w for s, w in ALL_SITES.items() if s is not Site.PATTERN}


def user_model(params, layout="separate", inline=False, widths=None):
  """(adapter, state): the user's model, made equal to the built-in one."""
  model = TinyLM(layout, inline, rngs=nnx.Rngs(1))
  _, state = nnx.split(model)
  nnx.replace_by_pure_dict(state, user_state(params, layout))
  nnx.update(model, state)
  widths = widths if widths is not None else (NO_PATTERN if inline else ALL_SITES)
  return NNXSites.from_model(model, LOCATE[layout], CFG.n_layers, CFG.n_heads, widths,
                             weights=weights if layout == "separate" else None)


@pytest.fixture(scope="module")
def params():
  return transformer.init_params(CFG, seed=0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_user_model_is_the_builtin_one_reparameterized(params, layout):
  tokens = Task().inputs["a"]
  ours = transformer.Transformer(CFG).apply({"params": params}, tokens)
  adapter, state = user_model(params, layout)
  wanted = [(1, 1, Site.Q), (0, 0, Site.K), (1, 0, Site.V), (0, 0, Site.PATTERN),
            (1, None, Site.RESID_PRE)]
  # Jitted as the engine runs it; a list out, since None (the stream's head) does not sort
  # against head numbers as a pytree key.
  run = jax.jit(lambda p, x: (lambda y, got: (y, [got[t] for t in wanted]))(
      *adapter.run(p, x, capture=wanted)))
  theirs, values = run(state, tokens)
  captured = dict(zip(wanted, values))
  np.testing.assert_allclose(theirs, ours, atol=1e-5)
  for layer, head, site in wanted:
    builtin = transformer.capture(CFG, params, tokens, layer, site)
    builtin = builtin if head is None else (builtin[:, head] if site is Site.PATTERN
                                            else builtin[:, :, head])
    np.testing.assert_allclose(captured[(layer, head, site)], builtin, atol=1e-5,
                               err_msg=f"{layout} {site}")


class Zero:
  """An intervention: zeroes its targets (so it shows where each lands)."""

  def __init__(self, *targets):
    self.targets = frozenset(targets)

  def __call__(self, target, x):
    return jnp.zeros_like(x)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_intervention_replaces_what_the_builtin_one_replaces(params, layout):
  """One head's keys in a fused projection, another's values: the rest of the fused output
  stays as it was, and the logits move as the built-in model's do."""
  tokens = Task().inputs["a"]
  zero = Zero((0, 1, Site.K), (1, 0, Site.V), (1, 1, Site.Q))
  ours = transformer.Transformer(CFG).apply({"params": params}, tokens, intervention=zero)
  adapter, state = user_model(params, layout)
  theirs, captured = adapter.run(state, tokens, zero, [(0, 1, Site.K), (0, 0, Site.K)])
  np.testing.assert_allclose(theirs, ours, atol=1e-5)
  assert not np.any(captured[(0, 1, Site.K)])
  np.testing.assert_allclose(captured[(0, 0, Site.K)],
                             transformer.capture(CFG, params, tokens, 0, "k")[:, :, 0],
                             atol=1e-5)


def test_the_adapter_is_a_value_and_leaves_the_model_as_it_was(params):
  """Two splits of the same model give equal adapters of one hash (one compiled program);
  a run hooks nothing that outlives it, and changes no state it was given."""
  a, state = user_model(params)
  b, _ = user_model(params)
  assert a == b and hash(a) == hash(b)
  assert a != user_model(params, "general")[0]
  before = jax.tree.map(np.asarray, state)
  a.run(state, Task().inputs["a"], Zero((0, 0, Site.Q)), [(1, 0, Site.PATTERN)])
  model = nnx.merge(a.graphdef, state)
  assert type(model.layers[0].attn.q_proj) is nnx.Linear
  assert not any("_nnx_sites_hook" in vars(m) for _, m in nnx.iter_modules(model))
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state), before)


def test_head_weights_are_the_users_to_say(params):
  adapter, state = user_model(params)
  got = adapter.head_weights(state, 1, 1)
  want = transformer.head_weights(params, 1, 1)
  np.testing.assert_array_equal(got["query"], want["query"])
  np.testing.assert_array_equal(got["key"], want["key"])
  with pytest.raises(ValueError, match="does not expose its head weights"):
    user_model(params, "einsum")[0].head_weights(state, 1, 1)


@pytest.mark.slow
@pytest.mark.parametrize("kind,values,layout", [("svd", (1, 4), "separate"),
                                                ("onehot", (), "separate"),
                                                ("weight_svd", (2,), "separate"),
                                                ("svd", (2,), "einsum")])
def test_a_user_model_is_fitted_and_evaluated_like_the_builtin_one(params, kind, values,
                                                                   layout):
  task = Task()
  builtin = api.Run(task, transformer.TransformerSites(CFG), params)
  adapter, state = user_model(params, layout)
  theirs = api.Run(task, adapter, state)
  b = own.evaluated_alike(builtin, theirs, kind, values)
  # The user's model keeps its compiled program: a second evaluation, through the adapter
  # of a second split of the same model, compiles nothing.
  again, state = user_model(params, layout)
  rerun = api.Run(task, again, state)
  assert rerun.evaluate(rerun.fit(kind, values, heads=own.HEADS, n_fit=8)).compilations == 0
  assert [r["bucket"] for r in b.by("parity")][:2] == ["even", "odd"]


def test_inline_attention_has_no_pattern_site(params):
  """A model that calls nnx.dot_product_attention: q, k, v and the stream are sites, the
  pattern is not, and declaring it is refused at once."""
  adapter, state = user_model(params, inline=True)
  assert Site.PATTERN not in adapter.sites and Site.Q in adapter.sites
  with pytest.raises(ValueError, match="no submodule computing it.*inline"):
    user_model(params, inline=True, widths=ALL_SITES)
  tokens = Task().inputs["a"]
  ours = transformer.Transformer(CFG).apply({"params": params}, tokens)
  theirs, captured = adapter.run(state, tokens, capture=[(1, 0, Site.Q)])
  np.testing.assert_allclose(theirs, ours, atol=1e-5)
  np.testing.assert_allclose(captured[(1, 0, Site.Q)],
                             transformer.capture(CFG, params, tokens, 1, "q")[:, :, 0],
                             atol=1e-5)
  with pytest.raises(ValueError, match="no pattern site"):
    adapter.run(state, tokens, capture=[(1, 0, Site.PATTERN)])


@pytest.mark.slow
def test_inline_attention_is_measured_without_the_jsd(params):
  """No pattern site: no attention JSD (missing, not 0); agreement is the built-in's; a
  pattern-site kind is refused in one line."""
  task = Task()
  builtin = api.Run(task, transformer.TransformerSites(CFG), params)
  adapter, state = user_model(params, inline=True)
  theirs = api.Run(task, adapter, state)
  a = builtin.evaluate(builtin.fit("svd", (2,), heads=[(1, 1)], n_fit=8))
  b = theirs.evaluate(theirs.fit("svd", (2,), heads=[(1, 1)], n_fit=8))
  assert all(r["attention_jsd"] is None for r in b.rows)
  for x, y in zip(a.rows, b.rows):
    assert x["agreement"] == pytest.approx(y["agreement"], abs=1e-6)
    assert x["tv"] == pytest.approx(y["tv"], abs=1e-5)
  # Refused by the engine before the model runs, or by the adapter when it is asked.
  with pytest.raises(ValueError, match="pattern, which this model does not expose|no pattern"):
    theirs.evaluate(theirs.fit("onehot", (), heads=[(1, 1)]))
