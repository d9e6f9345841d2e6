"""The faithfulness program runs each proxy setting from what the model's own run computed
(`program.staged_targets`): its sums must be those of the plain computation, the whole
model rerun under each setting with nothing staged, on the built-in Transformer and on a
Linen model reached through an adapter, for every kind of proxy; and what is staged must
really be left uncomputed (the block's LayerNorm and q/k/v projections)."""

import functools

import jax
import numpy as np
import pytest

import proxies
from models import mesh as mesh_lib, transformer
from models.sites import Site
from proxies import base, batching, capture, metrics, program
from tests import test_own_model as own

CFG, PAD = own.CFG, own.PAD  # 2 layers x 2 heads, d_model 16, d_head 8, 16 positions
DECISION = metrics.Decision(0, PAD)
# (kind, values, heads, options): multi-layer, single-head and pattern proxies, so that
# the staged first layer, the heads left alone and the layers after all take part.
CASES = [("svd", (1, 3, 8), [(0, 1), (1, 0)], {"centered": True}),
         ("kmeans", (2, 5), [(1, 1)], {}),
         ("onehot", (), [(0, 1)], {}),
         ("sae", (1, 4), [(1, 0)], {"steps": 40, "width": 16}),
         ("weight_svd", (1, 4), [(0, 0), (1, 1)], {})]


@pytest.fixture(scope="module")
def params():
  return transformer.init_params(CFG, seed=0)


@pytest.fixture(scope="module")
def tokens():
  """Random rows, every third padded after position 9: the second half of a batch."""
  x = np.random.default_rng(1).integers(0, PAD, (16, CFG.seq_len)).astype(np.int32)
  x[::3, 9:] = PAD
  return x


def models(params):
  """(name, SiteModel, its params): the built-in model, the same model as a user's Linen
  module with every site, and with q and k only (nothing to start from but those)."""
  theirs = own.user_params(params)
  return [("builtin", transformer.TransformerSites(CFG), params),
          ("linen", own.user_model(own.ALL_SITES), theirs),
          ("linen-qk", own.user_model({Site.Q: CFG.d_head, Site.K: CFG.d_head}), theirs)]


def fitted(kind, values, heads, options, params, tokens) -> base.Proxy:
  """The sweep fitted on the built-in model (the Linen one is the same model, so the same
  proxy applies to both)."""
  model = transformer.TransformerSites(CFG)
  spec = base.make_spec(model, kind, values, heads=heads, options=options)
  if proxies.KINDS[kind].fits_on == "weights":
    inputs = [model.head_weights(params, l, h) for l, h in heads]
  elif proxies.KINDS[kind].fits_on == "nothing":
    inputs = [{} for _ in heads]
  else:
    inputs = capture.collect_activations(CFG, params, tokens, PAD, heads, spec.sites)
  return base.fit(spec, inputs)


def reference_sums(model, params, proxy: base.Proxy, tokens) -> dict[str, np.ndarray]:
  """Per-sequence sums the plain way: the model run whole, once as it is and once under
  each setting, all logits and the simplified heads' patterns captured, the metrics taken
  in float64."""
  patterns = ([(l, h, Site.PATTERN) for l, h in proxy.heads] if Site.PATTERN in model.sites
              else [])
  run = jax.jit(lambda p, intervention: model.run(params, tokens, intervention, patterns))
  logits_m, got_m = jax.jit(lambda: model.run(params, tokens, None, patterns))()
  logits_m = np.asarray(logits_m, np.float64)
  gold, scored = np.roll(tokens, -1, 1), tokens != PAD
  query = scored.astype(np.float64) * bool(patterns)

  def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))

  def entropy(p):
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), -1)

  predict = lambda z: np.argmax(z[..., DECISION.lo:DECISION.hi], -1) + DECISION.lo
  logp_m = log_softmax(logits_m)
  correct_m = predict(logits_m) == gold
  nll_m = -np.take_along_axis(logp_m, np.clip(gold, 0, None)[..., None], -1)[..., 0]
  settings = [proxy] if not jax.tree_util.tree_leaves(proxy) else [
      proxy.setting(i) for i in range(proxy.size)]
  out = {"n_scored": scored.sum(1), "correct_model": (correct_m & scored).sum(1),
         "nll_model": (nll_m * scored).sum(1), "n_query": query.sum(1)}
  per_setting = {k: [] for k in ("correct_proxy", "agree", "both_wrong", "tv", "kl",
                                 "attention_jsd")}
  for setting in settings:
    logits_p, got_p = run(params, setting)
    logits_p = np.asarray(logits_p, np.float64)
    logp_p = log_softmax(logits_p)
    correct_p = predict(logits_p) == gold
    p_m, p_p = np.exp(logp_m), np.exp(logp_p)
    per_setting["correct_proxy"].append((correct_p & scored).sum(1))
    per_setting["agree"].append(((predict(logits_p) == predict(logits_m)) & scored).sum(1))
    per_setting["both_wrong"].append((~correct_m & ~correct_p & scored).sum(1))
    per_setting["tv"].append((0.5 * np.abs(p_m - p_p).sum(-1) * scored).sum(1))
    per_setting["kl"].append((np.sum(p_m * (logp_m - logp_p), -1) * scored).sum(1))
    jsd = np.zeros(tokens.shape)
    for t in patterns:
      a, b = np.asarray(got_m[t], np.float64), np.asarray(got_p[t], np.float64)
      jsd += (entropy((a + b) / 2) - (entropy(a) + entropy(b)) / 2) / len(patterns)
    per_setting["attention_jsd"].append((jsd * query).sum(1))
  return {**out, **{k: np.stack(v) for k, v in per_setting.items()}}


@pytest.mark.parametrize("kind,values,heads,options", CASES, ids=[c[0] for c in CASES])
def test_every_setting_from_the_staged_values_sums_as_the_whole_model_rerun(
    kind, values, heads, options, params, tokens):
  proxy = fitted(kind, values, heads, options, params, tokens)
  batch = {"inputs": tokens, "gold": np.roll(tokens, -1, 1), "scored": tokens != PAD}
  slots = batching.read_out_slots(batch, {}, mesh_lib.data_mesh())
  positions = np.maximum(batch["scored"].sum(1), 1)
  ran = 0
  for name, model, model_params in models(params):
    if not all(s in model.sites for s in proxy.sites):
      continue  # onehot needs a pattern site
    expected = reference_sums(model, model_params, proxy, tokens)
    for per_step in (1, 2):  # a loop over the settings, and settings side by side
      sums = jax.jit(functools.partial(
          program.batch_sums, model=model, decision=DECISION, pad_id=PAD, groups={},
          settings_per_step=per_step))(model_params, proxy, tokens, {}, slots)["sequence"]
      for k, want in expected.items():
        # Within 1e-6 per position summed (1e-6 of the sum where that is more): two
        # float32 runs of one model differ by about that much.
        error = np.abs(np.asarray(sums[k], np.float64) - want)
        assert np.all(error <= np.maximum(1e-6 * positions, 1e-6 * np.abs(want))), (
            f"{kind} on {name}, {k}: off by {error.max():.2e}")
    ran += 1
  assert ran == (2 if kind == "onehot" else 3)
  if kind == "svd":  # the sweep does change the model, so the comparison can fail
    assert expected["agree"][0].sum() < expected["n_scored"].sum()


def test_what_a_setting_starts_from(params):
  builtin, qk_only = transformer.TransformerSites(CFG), models(params)[2][1]
  proxy = lambda kind, heads, sites: base.Proxy(({},) * len(heads), kind, tuple(heads),
                                                tuple(Site(s) for s in sites))
  qkv = {(1, h, s) for h in (0, 1) for s in (Site.Q, Site.K, Site.V)}
  # A q/k proxy of head 0: the stream, every head's q/k/v, head 1's pattern.
  assert set(program.staged_targets(builtin, proxy("svd", [(1, 0)], ["q", "k"]))) == {
      (1, None, Site.RESID_PRE), *qkv, (1, 1, Site.PATTERN)}
  # A pattern proxy reads its head's own pattern, so every head's is staged.
  assert set(program.staged_targets(builtin, proxy("onehot", [(1, 0)], ["pattern"]))) == {
      (1, None, Site.RESID_PRE), *qkv, (1, 0, Site.PATTERN), (1, 1, Site.PATTERN)}
  # A proxy of the stream changes everything in its block: only the stream is staged.
  assert program.staged_targets(builtin, proxy("svd", [(1, 0)], ["resid_pre"])) == [
      (1, None, Site.RESID_PRE)]
  # The first layer only, however many layers the proxy spans.
  assert {t[0] for t in program.staged_targets(
      builtin, proxy("svd", [(0, 1), (1, 0)], ["q"]))} == {0}
  # Only sites the model exposes.
  assert set(program.staged_targets(qk_only, proxy("svd", [(1, 0)], ["q", "k"]))) == {
      (1, h, s) for h in (0, 1) for s in (Site.Q, Site.K)}


@pytest.mark.parametrize("which", [0, 1], ids=["builtin", "linen"])
def test_a_setting_run_from_staged_values_leaves_the_layernorm_and_projections_out(
    which, params, tokens):
  """One setting (no loop, so no loop-invariant hoisting can hide the difference), from the
  staged values as inputs: staging q/k/v as well as the stream must remove at least the
  layer's q/k/v projections from the compiled work."""
  _, model, model_params = models(params)[which]
  proxy = fitted("svd", (4,), [(1, 0)], {}, params, tokens).setting(0)
  everything = program.staged_targets(model, proxy)
  stream_only = [(1, None, Site.RESID_PRE)]
  # A list, not a dict keyed by target: the stream's head None does not sort against 0.
  captured = jax.jit(lambda: [model.run(model_params, tokens, None, everything)[1][t]
                              for t in everything])()

  def flops(targets):
    def one(values):
      staged = program._Staged(dict(zip(targets, values)), proxy)
      return model.run(model_params, tokens, staged)[0]
    values = [captured[everything.index(t)] for t in targets]
    return jax.jit(one).lower(values).compile().cost_analysis()["flops"]

  b, l = tokens.shape
  qkv_projections = 3 * 2 * b * l * CFG.d_model * CFG.n_heads * CFG.d_head
  assert flops(stream_only) - flops(everything) >= qkv_projections
