"""Bring your own model: a Flax Linen model written without this project in mind (fused
names, [M, H*D] kernels, its own module tree), fitted and evaluated through
`models.sites.LinenSites`, gives the same numbers as the built-in Transformer it equals."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pipeline import api
from models import transformer
from models.sites import LinenSites, Site
from proxies import faithfulness, metrics

CFG = transformer.ModelConfig(vocab_size=11, seq_len=16, n_layers=2, n_heads=2, d_model=16,
                              d_head=8, d_mlp=32)
PAD = 10


class Softmax(nn.Module):
  """The user's attention normalization, a module of its own: so the pattern is a site."""

  @nn.compact
  def __call__(self, scores):
    return jax.nn.softmax(scores, axis=-1)


class SelfAttention(nn.Module):
  n_heads: int
  d_head: int

  @nn.compact
  def __call__(self, x):
    b, l, m = x.shape
    width = self.n_heads * self.d_head
    q = nn.Dense(width, use_bias=False, name="q_proj")(x).reshape(b, l, self.n_heads, -1)
    k = nn.Dense(width, use_bias=False, name="k_proj")(x).reshape(b, l, self.n_heads, -1)
    v = nn.Dense(width, use_bias=False, name="v_proj")(x).reshape(b, l, self.n_heads, -1)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(self.d_head)
    scores = jnp.where(jnp.tril(jnp.ones((l, l), bool)), scores, -1e30)
    probs = Softmax(name="softmax")(scores)
    z = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, l, width)
    return nn.Dense(m, use_bias=False, name="o_proj")(z)


class Layer(nn.Module):
  n_heads: int
  d_head: int
  d_mlp: int

  @nn.compact
  def __call__(self, x):
    x = x + SelfAttention(self.n_heads, self.d_head, name="attn")(nn.LayerNorm(name="norm1")(x))
    h = nn.gelu(nn.Dense(self.d_mlp, name="up")(nn.LayerNorm(name="norm2")(x)))
    return x + nn.Dense(x.shape[-1], name="down")(h)


class TinyLM(nn.Module):
  """A user's language model: tokens [B, L] -> logits [B, L, V]."""

  vocab: int
  length: int
  n_layers: int
  n_heads: int
  d_model: int
  d_head: int
  d_mlp: int

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.vocab, self.d_model, name="wte")(tokens)
    x = x + self.param("wpe", nn.initializers.normal(0.02), (self.length, self.d_model))[
        :tokens.shape[1]]
    for i in range(self.n_layers):
      x = Layer(self.n_heads, self.d_head, self.d_mlp, name=f"layers_{i}")(x)
    return nn.Dense(self.vocab, name="lm_head")(nn.LayerNorm(name="norm_f")(x))


SITE_OF = {"q_proj": Site.Q, "k_proj": Site.K, "v_proj": Site.V, "softmax": Site.PATTERN}


def locate(path):
  """The adapter the user writes: which site each submodule computes."""
  if len(path) == 1 and path[0].startswith("layers_"):
    return int(path[0].split("_")[1]), Site.RESID_PRE  # a layer's input
  if len(path) == 3 and path[0].startswith("layers_") and path[1] == "attn":
    site = SITE_OF.get(path[2])
    return (int(path[0].split("_")[1]), site) if site else None
  return None


def user_params(params):
  """The built-in Transformer's parameters in the user's layout."""
  out = {"wte": {"embedding": params["embed"]["embedding"]}, "wpe": params["positions"],
         "norm_f": params["ln_final"], "lm_head": params["unembed"]}
  for i in range(CFG.n_layers):
    block, attention = params[f"block_{i}"], params[f"block_{i}"]["attention"]
    fused = lambda w: {"kernel": w["kernel"].reshape(CFG.d_model, -1)}
    out[f"layers_{i}"] = {
        "norm1": block["ln_attention"], "norm2": block["ln_mlp"],
        "up": block["mlp_in"], "down": block["mlp_out"],
        "attn": {"q_proj": fused(attention["query"]), "k_proj": fused(attention["key"]),
                 "v_proj": fused(attention["value"]),
                 "o_proj": {"kernel": attention["out"]["kernel"].reshape(-1, CFG.d_model)}}}
  return out


def user_model(widths):
  module = TinyLM(CFG.vocab_size, CFG.seq_len, CFG.n_layers, CFG.n_heads, CFG.d_model,
                  CFG.d_head, CFG.d_mlp)
  return LinenSites(module, locate, CFG.n_layers, CFG.n_heads, widths)


ALL_SITES = {Site.RESID_PRE: CFG.d_model, Site.Q: CFG.d_head, Site.K: CFG.d_head,
             Site.V: CFG.d_head, Site.PATTERN: CFG.seq_len}


class Task:
  """The least a task needs to be: splits of token arrays, training strings to fit on."""

  splits = ("a", "b")
  scorings = ("all",)
  pad_id = PAD
  groups = {"parity": ["even", "odd"]}
  strata = {}
  n_train = 16

  def __init__(self):
    rng = np.random.default_rng(0)
    self.inputs = {s: rng.integers(0, PAD, (12, CFG.seq_len)).astype(np.int32)
                   for s in ("train", *self.splits)}
    self.inputs["b"][:, 10:] = PAD

  def fit_inputs(self, n):
    return self.inputs["train"][:n]

  def eval_arrays(self, split, scoring="all"):
    x = self.inputs[split]
    return {"inputs": x, "gold": np.roll(x, -1, 1), "scored": x != PAD,
            "parity": (x % 2).astype(np.int32)}

  def decision(self, scoring="all"):
    return metrics.Decision(0, PAD)

  def clusters(self, split):
    return None


@pytest.fixture(scope="module")
def params():
  return transformer.init_params(CFG, seed=0)


def test_the_user_model_is_the_builtin_one_reparameterized(params):
  tokens = Task().inputs["a"]
  ours = transformer.Transformer(CFG).apply({"params": params}, tokens)
  theirs, captured = user_model(ALL_SITES).run(
      user_params(params), tokens, capture=[(1, 1, Site.Q), (0, 0, Site.PATTERN)])
  np.testing.assert_allclose(theirs, ours, atol=1e-5)
  np.testing.assert_allclose(captured[(1, 1, Site.Q)],
                             transformer.capture(CFG, params, tokens, 1, "q")[:, :, 1],
                             atol=1e-5)
  np.testing.assert_allclose(captured[(0, 0, Site.PATTERN)],
                             transformer.capture(CFG, params, tokens, 0, "pattern")[:, 0],
                             atol=1e-5)


HEADS = [(0, 1), (1, 0)]  # two heads of two layers, at once


def evaluated_alike(builtin: api.Run, theirs: api.Run, kind: str, values):
  """The same proxy fitted and evaluated through both runs gives the same rows (and svd
  really simplifies); returns their result."""
  a = builtin.evaluate(builtin.fit(kind, values, heads=HEADS, n_fit=8))
  b = theirs.evaluate(theirs.fit(kind, values, heads=HEADS, n_fit=8))
  assert len(a.rows) == len(b.rows) == 2 * max(len(values), 1)
  for x, y in zip(a.rows, b.rows):
    for metric in ("agreement", "accuracy_proxy", "accuracy_model", "attention_jsd", "tv"):
      assert x[metric] == pytest.approx(y[metric], abs=1e-4), (kind, metric)
  if kind == "svd":
    assert a.rows[0]["agreement"] < 1.0 and a.rows[0]["attention_jsd"] > 1e-4
  return b


@pytest.mark.parametrize("kind,values", [("svd", (1, 4)), ("kmeans", (3,)), ("onehot", ())])
def test_a_user_model_is_fitted_and_evaluated_like_the_builtin_one(params, kind, values):
  task = Task()
  builtin = api.Run(task, transformer.TransformerSites(CFG), params)
  theirs = api.Run(task, user_model(ALL_SITES), user_params(params))
  b = evaluated_alike(builtin, theirs, kind, values)
  # The user's model keeps its compiled program too: a second evaluation compiles nothing.
  assert theirs.evaluate(theirs.fit(kind, values, heads=HEADS, n_fit=8)).compilations == 0
  assert [r["bucket"] for r in b.by("parity")][:2] == ["even", "odd"]


def test_without_a_pattern_or_stream_site_the_engine_still_measures(params):
  """No pattern site: no attention JSD (missing, not 0); no resid_pre: each setting runs the
  whole model. Agreement is unchanged."""
  task = Task()
  full = api.Run(task, user_model(ALL_SITES), user_params(params))
  bare = api.Run(task, user_model({Site.Q: CFG.d_head, Site.K: CFG.d_head}),
                 user_params(params))
  a = full.evaluate(full.fit("svd", (2,), heads=[(1, 1)], n_fit=8))
  b = bare.evaluate(bare.fit("svd", (2,), heads=[(1, 1)], n_fit=8))
  assert all(r["attention_jsd"] is None for r in b.rows)
  for x, y in zip(a.rows, b.rows):
    assert x["agreement"] == pytest.approx(y["agreement"], abs=1e-6)
    assert x["tv"] == pytest.approx(y["tv"], abs=1e-5)


def test_a_user_model_without_head_weights_refuses_weight_svd_in_one_line(params):
  run = api.Run(Task(), user_model(ALL_SITES), user_params(params))
  with pytest.raises(ValueError, match="does not expose its head weights"):
    run.fit("weight_svd", (2,), heads=[(1, 0)])
  collected = faithfulness.collect_activations(run.model, run.params, Task().fit_inputs(4), PAD,
                                               [(1, 0)], ("q",))
  assert collected[0]["q"].shape == ((Task().fit_inputs(4) != PAD).sum(), CFG.d_head)
