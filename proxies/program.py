"""The faithfulness program: the model and every setting of a proxy sweep on one batch,
reduced to sums (per sequence, for intervals over strings, and per bucket of each group).

`batch_sums` is the program as a pure function of the batch: it runs the model once and
every proxy setting of the sweep (a loop over the stacked `Proxy`, `settings_per_step`
vmapped at a time). Each setting starts from what the model's run computed upstream of
its sites (`staged_targets`: the stream entering its first layer, that layer's q, k and v,
the patterns of its heads the proxy leaves alone), so a setting pays for what its proxy
changes: a q/k proxy recomputes neither the blocks before it nor its block's LayerNorm and
projections, a pattern proxy no scores. `FaithfulnessProgram` jits it once per model, with the batch split over
a mesh, and feeds it batches cut by `proxies.batching`.

Only scored positions are read out (`batching.read_out_slots`): the last MLP, the
unembedding, the softmaxes, TV and KL run there only. Attention, and the JSD of the
simplified head's pattern, still cover every real query. On a CPU settings run one at a
time, so a setting's [B, L, L] attention stays in cache, and its JSD is taken inside the
loop, so no [P, B, L, L] stack is written.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from models import mesh as mesh_lib, sites as sites_lib
from models.sites import Site, Target
from proxies import base, batching, capture, metrics, results


def _sum_by(v_xN: jax.Array, ids_N: jax.Array, n: int) -> jax.Array:
  """Sums [..., N] over its last axis into n buckets by id; ids outside 0..n-1 are dropped."""
  return jnp.moveaxis(jax.ops.segment_sum(jnp.moveaxis(v_xN, -1, 0), ids_N, n), 0, -1)


def staged_targets(model: sites_lib.SiteModel, proxy: base.Proxy) -> list[Target]:
  """What every setting of `proxy` can take from the model's own run instead of computing
  it again: the values of its first layer that lie upstream of all its sites, where the
  model exposes them. The stream entering that layer (so the blocks before it are dead
  code); unless the proxy replaces that stream, every head's q, k and v there (so the
  block's LayerNorm and projections are dead code too); and the pattern of each head there
  whose q and k the proxy leaves alone (a pattern proxy reads it, the other heads' scores
  are not needed). Later layers see what the proxy changed and are always recomputed."""
  layer, targets = proxy.first_layer, proxy.targets
  staged = [(layer, None, Site.RESID_PRE)] if Site.RESID_PRE in model.sites else []
  if (layer, None, Site.RESID_PRE) in targets:
    return staged
  heads = range(model.n_heads)
  staged += [(layer, h, s) for s in (Site.Q, Site.K, Site.V) if s in model.sites
             for h in heads]
  if Site.PATTERN in model.sites:
    staged += [(layer, h, Site.PATTERN) for h in heads
               if (layer, h, Site.Q) not in targets and (layer, h, Site.K) not in targets]
  return staged


@dataclasses.dataclass(frozen=True)
class _Staged:
  """`proxy`, run from values the model's own run computed (`staged_targets`): each staged
  target's value is replaced by the model's, then the proxy applies where it targets, so
  whatever computed the staged values is never used and XLA removes it. Each setting then
  pays only for what its proxy changes."""

  values: Mapping[Target, jax.Array]
  proxy: base.Proxy

  @property
  def targets(self) -> frozenset[Target]:
    return self.proxy.targets | frozenset(self.values)

  def __call__(self, where: Target, x: jax.Array) -> jax.Array:
    x = self.values.get(where, x)
    return self.proxy(where, x) if where in self.proxy.targets else x


def _run(model: sites_lib.SiteModel, params, inputs_BxL, intervention, readout,
         proxy: base.Proxy, stage: bool):
  """(logits [T, V] at the read-out slots, the simplified heads' patterns [B, H', L, L]
  or None without a pattern site, and with `stage` the values a setting starts from
  ({target: value}, `staged_targets`; empty where the model exposes none of them))."""
  patterns = ([(l, h, Site.PATTERN) for l, h in proxy.heads] if Site.PATTERN in model.sites
              else [])
  staged = staged_targets(model, proxy) if stage else []
  logits_TxV, got = model.run(params, inputs_BxL, intervention,
                              list(dict.fromkeys(patterns + staged)), readout)
  pattern_BxHxLxL = jnp.stack([got[t] for t in patterns], 1) if patterns else None
  return logits_TxV, pattern_BxHxLxL, {t: got[t] for t in staged}


def _run_sweep(model: sites_lib.SiteModel, settings_per_step: int, params, inputs_BxL,
               proxy: base.Proxy, readout, staged: Mapping[Target, jax.Array],
               pattern_BxHxLxL):
  """Every setting, each started from the `staged` values of the model's run (the model
  whole where there are none), `settings_per_step` at a time: (logits [P, T, V], JSD of
  its patterns from the model's, averaged over the simplified heads [P, B, L]). The JSD is
  taken inside the loop, so no [P, B, H', L, L] stack is ever written."""
  def one(p):
    intervention = _Staged(staged, p) if staged else p
    logits_TxV, pattern_p, _ = _run(model, params, inputs_BxL, intervention, readout, p,
                                    stage=False)
    if pattern_p is None:
      return logits_TxV, jnp.zeros(inputs_BxL.shape)
    return logits_TxV, metrics.js_divergence(pattern_BxHxLxL, pattern_p).mean(1)
  if not jax.tree_util.tree_leaves(proxy):  # a kind without parameters: one setting
    return jax.tree_util.tree_map(lambda a: a[None], one(proxy))
  return jax.lax.map(one, proxy, batch_size=min(settings_per_step, proxy.size))


def batch_sums(params, proxy: base.Proxy, inputs_BxL: jax.Array,
               groups_BxL: Mapping[str, jax.Array], slots: Mapping[str, jax.Array], *,
               model: sites_lib.SiteModel, decision: metrics.Decision, pad_id: int,
               groups: Mapping[str, int], settings_per_step: int = 1,
               sequence_groups: tuple[str, ...] = ()) -> dict:
  """The model vs. every setting of `proxy` on one batch: {'sequence': {sum: [B] or [P, B]},
  <group>: {sum: [G] or [P, G]}} for each group of `groups` (name -> number of buckets),
  the sums of `results.SUMS`; and for each of `sequence_groups` (a static switch: nothing
  is computed without it) 'by_sequence': {group: {sum: [B, G] or [P, B, G]}}, the sums of
  `results.SEQUENCE_GROUP_SUMS` per string per bucket. Pure: jit it or call it as it is.

  `inputs_BxL`: tokens; `groups_BxL`: each group's bucket per position; `slots`: rows,
  cols, gold, scored and each group's bucket, all [T], the positions read out (unscored
  slots are padding; `batching.read_out_slots`). The attention JSD needs the model's
  `pattern` site, the staging its `resid_pre`, q, k, v and pattern sites; a model without
  them is still measured, without the JSD / with each setting computing more of the
  model again."""
  readout = (slots["rows"], slots["cols"])
  logits_TxV, pattern_BxHxLxL, staged = _run(model, params, inputs_BxL, None, readout,
                                             proxy, stage=True)
  logits_PxTxV, jsd_PxBxL = _run_sweep(model, settings_per_step, params, inputs_BxL, proxy,
                                       readout, staged, pattern_BxHxLxL)

  gold_T, scored_T = slots["gold"], slots["scored"].astype(jnp.float32)
  probs_TxV = jax.nn.softmax(logits_TxV)
  probs_PxTxV = jax.nn.softmax(logits_PxTxV)
  correct_model = decision.correct(logits_TxV, gold_T)
  correct_proxy = decision.correct(logits_PxTxV, gold_T)
  gold_log_prob_T = jnp.take_along_axis(jax.nn.log_softmax(logits_TxV),
                                        jnp.clip(gold_T, 0, None)[:, None], axis=-1)[:, 0]
  per_slot = {
      "n_scored": scored_T,
      "correct_model": correct_model * scored_T,
      "nll_model": -gold_log_prob_T * scored_T,
      "correct_proxy": correct_proxy * scored_T,
      "agree": (decision.predict(logits_PxTxV) == decision.predict(logits_TxV)) * scored_T,
      "both_wrong": (~correct_model & ~correct_proxy) * scored_T,
      "tv": metrics.total_variation(probs_TxV, probs_PxTxV) * scored_T,
      "kl": metrics.kl_divergence(probs_TxV, probs_PxTxV) * scored_T,
  }
  # Without a pattern site no query counts, so the JSD comes out missing, not 0.
  query_BxL = (inputs_BxL != pad_id).astype(jnp.float32) * (Site.PATTERN in model.sites)
  per_position = {  # [..., B, L]
      "n_query": query_BxL,
      "attention_jsd": jsd_PxBxL * query_BxL,
  }
  n_rows = inputs_BxL.shape[0]
  out = {"sequence": {**{k: _sum_by(v, slots["rows"], n_rows) for k, v in per_slot.items()},
                      **{k: v.sum(-1) for k, v in per_position.items()}}}
  for group, n_buckets in groups.items():
    ids_N = groups_BxL[group].reshape(-1)
    out[group] = {
        **{k: _sum_by(v, slots[group], n_buckets) for k, v in per_slot.items()},
        **{k: _sum_by(v.reshape(*v.shape[:-2], -1), ids_N, n_buckets)
           for k, v in per_position.items()}}
  if sequence_groups:
    out["by_sequence"] = {}
  for group in sequence_groups:  # each (string, bucket) a bucket of its own
    n_buckets = groups[group]
    ids_T = jnp.where(slots[group] >= 0, slots["rows"] * n_buckets + slots[group], -1)
    out["by_sequence"][group] = {
        k: _sum_by(per_slot[k], ids_T, n_rows * n_buckets).reshape(
            *per_slot[k].shape[:-1], n_rows, n_buckets)
        for k in results.SEQUENCE_GROUP_SUMS}
  return out


class FaithfulnessProgram:
  """`batch_sums` compiled for one model, decision and set of groups; `__call__` on one
  batch of arrays: `inputs`, targets-aligned `gold`, `scored` (bool), and one int array per
  group - all [B, L]. A group (e.g. depth) buckets positions; `groups` maps its name to its
  number of buckets, and positions whose bucket is outside 0..n-1 belong to none.

  `model`: a `sites.SiteModel` (or the `ModelConfig` of the built-in Transformer). One
  program serves every sweep of every kind (each proxy structure traces once)."""

  def __init__(self, model, decision: metrics.Decision, pad_id: int,
               groups: Mapping[str, int] | None = None, mesh=None,
               settings_per_step: int | None = None, sequence_groups: tuple[str, ...] = ()):
    self.model = capture.site_model(model)
    self.groups = dict(groups or {})
    self.sequence_groups = tuple(sequence_groups)  # groups also summed per string
    for group in self.sequence_groups:
      if group not in self.groups:
        raise ValueError(f"sequence group {group!r} is none of the groups "
                         f"({', '.join(self.groups)})")
    self.mesh = mesh or mesh_lib.data_mesh()
    # How many settings of a sweep run side by side (vmapped); the rest follow in a loop
    # inside the program. On a CPU one at a time is fastest: a setting's [B, L, L]
    # attention stays in cache, where 16 side by side stream through memory (1.5x slower
    # per setting, measured). Accelerators want the whole sweep at once.
    if settings_per_step is None:
      settings_per_step = 1 if jax.default_backend() == "cpu" else 1 << 16
    self.settings_per_step = settings_per_step
    self.shapes: set[tuple[int, int, int]] = set()  # (rows, width, slots) run so far
    program = functools.partial(batch_sums, model=self.model, decision=decision,
                                pad_id=pad_id, groups=self.groups,
                                settings_per_step=settings_per_step,
                                sequence_groups=self.sequence_groups)
    # Batches (and their read-out slots) are split over the mesh's data axis; parameters and
    # the proxy sweep are replicated (`place` them once). Sums per sequence stay split;
    # per-group sums reduce.
    replicated, split = mesh_lib.replicated(self.mesh), mesh_lib.batch_sharding(self.mesh)
    self._program = jax.jit(program, in_shardings=(replicated, replicated, split, split, split))

  def place(self, params, proxy: base.Proxy):
    """(params, proxy) replicated over the mesh: do it once, not per batch."""
    return mesh_lib.replicate(self.mesh, params), mesh_lib.replicate(self.mesh, proxy)

  def slots(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batch's read-out slots (`batching.read_out_slots`) for this program's groups."""
    return batching.read_out_slots(batch, self.groups, self.mesh)

  def _arguments(self, params, proxy: base.Proxy, batch: Mapping[str, np.ndarray]):
    shard = lambda arrays: mesh_lib.shard_batch(self.mesh, arrays)
    return (params, proxy, shard({"inputs": batch["inputs"]})["inputs"],
            shard({g: batch[g] for g in self.groups}), shard(self.slots(batch)))

  def __call__(self, params, proxy: base.Proxy, batch: Mapping[str, np.ndarray]) -> dict:
    arguments = self._arguments(params, proxy, batch)
    self.shapes.add((*batch["inputs"].shape, arguments[-1]["rows"].shape[0]))
    return mesh_lib.to_host(self._program(*arguments))

  def lower(self, params, proxy: base.Proxy, batch: Mapping[str, np.ndarray]):
    """The program lowered for this batch's shapes (for its cost analysis)."""
    return self._program.lower(*self._arguments(params, proxy, batch))
