"""Faithfulness of a proxy sweep to the model, in one compiled program per batch shape.

`FaithfulnessProgram` jits one function that runs the model once and every proxy setting
of a sweep (a loop over the stacked `Proxy`, `settings_per_step` vmapped at a time), and
reduces what it needs to sums per sequence (for bootstrap intervals over strings) and per
bucket of each group (depth, distance). Each setting starts from the residual stream
entering its layer, which the model's run computed: work upstream of the simplified site
is done once, not once per setting.

Three things keep the work proportional to what is measured:
  - length buckets: `evaluate` sorts a split's strings by length and cuts each batch to
    the smallest width in a short ladder (powers of two up to the model's positions) that
    holds its longest string, so attention is not spent on padding;
  - read-out slots: next-token distributions and their metrics are needed only at scored
    positions, so those are gathered into T slots (B*L/16, B*L/4 or B*L) and the last
    MLP, the unembedding, the softmaxes, TV and KL run there only. Attention, and the JSD
    of the simplified head's pattern, still cover every real query;
  - on a CPU settings run one at a time, so a setting's [B, L, L] attention stays in cache,
    and its JSD is taken inside the loop, so no [P, B, L, L] stack is written.
Each (batch, width, slots) shape is one compilation; splits stream through fixed-shape
batches, so memory does not grow with the split.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from models import mesh as mesh_lib, sites as sites_lib, transformer
from models.sites import Site, Target
from proxies import base, metrics

# Sums returned by the program; [B] (or per group [G]) for the model, [P, B] ([P, G]) for
# the proxies. `both_wrong` counts scored positions where model and proxy both err.
MODEL_SUMS = ("n_scored", "n_query", "correct_model", "nll_model")
PROXY_SUMS = ("correct_proxy", "agree", "both_wrong", "tv", "kl", "attention_jsd")
SUMS = MODEL_SUMS + PROXY_SUMS
SMALLEST_WIDTH = 16  # the shortest length bucket


def _sum_by(v_xN: jax.Array, ids_N: jax.Array, n: int) -> jax.Array:
  """Sums [..., N] over its last axis into n buckets by id; ids outside 0..n-1 are dropped."""
  return jnp.moveaxis(jax.ops.segment_sum(jnp.moveaxis(v_xN, -1, 0), ids_N, n), 0, -1)


@dataclasses.dataclass(frozen=True)
class _FromLayer:
  """`proxy`, run from a residual stream already computed: the stream entering block
  `layer` (the proxy's first) is replaced by `resid_BxLxM`, so the blocks before it compute
  nothing that is used and XLA removes them. Work upstream of the simplified sites is then
  done once per batch (by the model's own run), not once per setting."""

  resid_BxLxM: jax.Array
  proxy: base.Proxy

  @property
  def start(self) -> Target:
    return (self.proxy.first_layer, None, Site.RESID_PRE)

  @property
  def targets(self) -> frozenset[Target]:
    return self.proxy.targets | {self.start}

  def __call__(self, where: Target, x: jax.Array) -> jax.Array:
    if where == self.start:
      x = self.resid_BxLxM
    return self.proxy(where, x) if where in self.proxy.targets else x


def site_model(model) -> sites_lib.SiteModel:
  """A `SiteModel`: the model itself, or the built-in Transformer of a `ModelConfig`."""
  return transformer.TransformerSites(model) if isinstance(model, transformer.ModelConfig) \
      else model


class FaithfulnessProgram:
  """Model vs. every setting of one proxy sweep; `__call__` on one batch of arrays:
  `inputs`, targets-aligned `gold`, `scored` (bool), and one int array per group - all
  [B, L]. A group (e.g. depth) buckets positions; `groups` maps its name to its number of
  buckets, and positions whose bucket is outside 0..n-1 belong to none.

  `model`: a `sites.SiteModel` (or the `ModelConfig` of the built-in Transformer). The
  attention JSD needs its `pattern` site, the upstream-once staging its `resid_pre`; a
  model without them is still measured, without the JSD / with every setting run whole.
  One program serves every sweep of every kind (each proxy structure traces once)."""

  def __init__(self, model, decision: metrics.Decision, pad_id: int,
               groups: Mapping[str, int] | None = None, mesh=None,
               settings_per_step: int | None = None):
    model = site_model(model)
    self.model = model
    self.groups = dict(groups or {})
    self.mesh = mesh or mesh_lib.data_mesh()
    # How many settings of a sweep run side by side (vmapped); the rest follow in a loop
    # inside the program. On a CPU one at a time is fastest: a setting's [B, L, L]
    # attention stays in cache, where 16 side by side stream through memory (1.5x slower
    # per setting, measured). Accelerators want the whole sweep at once.
    if settings_per_step is None:
      settings_per_step = 1 if jax.default_backend() == "cpu" else 1 << 16
    self.settings_per_step = settings_per_step
    self.shapes: set[tuple[int, int, int]] = set()  # (rows, width, slots) run so far
    has_pattern = Site.PATTERN in model.sites
    can_stage = Site.RESID_PRE in model.sites

    def run(params, inputs_BxL, intervention, readout, proxy: base.Proxy, stage: bool):
      """(logits [T, V] at the read-out slots, the simplified heads' patterns [B, H', L, L]
      or None without a pattern site, and with `stage` the residual stream entering the
      proxy's first layer [B, L, M], or None where the model has no such site)."""
      capture = [(l, h, Site.PATTERN) for l, h in proxy.heads] if has_pattern else []
      start = (proxy.first_layer, None, Site.RESID_PRE)
      stage = stage and can_stage
      logits_TxV, got = model.run(params, inputs_BxL, intervention,
                                  capture + [start] * stage, readout)
      pattern_BxHxLxL = jnp.stack([got[t] for t in capture], 1) if capture else None
      return logits_TxV, pattern_BxHxLxL, got.get(start)

    def run_sweep(params, inputs_BxL, proxy: base.Proxy, readout, resid_BxLxM,
                  pattern_BxHxLxL):
      """Every setting, each started from the residual stream entering its first layer
      (computed once by the model's run), `settings_per_step` at a time: (logits [P, T, V],
      JSD of its patterns from the model's, averaged over the simplified heads [P, B, L]).
      The JSD is taken inside the loop, so no [P, B, H', L, L] stack is ever written."""
      def one(p):
        staged = p if resid_BxLxM is None else _FromLayer(resid_BxLxM, p)
        logits_TxV, pattern_p, _ = run(params, inputs_BxL, staged, readout, p, stage=False)
        if pattern_p is None:
          return logits_TxV, jnp.zeros(inputs_BxL.shape)
        return logits_TxV, metrics.js_divergence(pattern_BxHxLxL, pattern_p).mean(1)
      if not jax.tree_util.tree_leaves(proxy):  # a kind without parameters: one setting
        return jax.tree_util.tree_map(lambda a: a[None], one(proxy))
      return jax.lax.map(one, proxy, batch_size=min(self.settings_per_step, proxy.size))

    def program(params, proxy: base.Proxy, inputs_BxL, groups_BxL, slots):
      """`slots`: rows, cols, gold, scored and each group's bucket, all [T]: the positions
      read out (unscored slots are padding)."""
      readout = (slots["rows"], slots["cols"])
      logits_TxV, pattern_BxHxLxL, resid_BxLxM = run(params, inputs_BxL, None, readout, proxy,
                                                     stage=True)
      logits_PxTxV, jsd_PxBxL = run_sweep(params, inputs_BxL, proxy, readout, resid_BxLxM,
                                          pattern_BxHxLxL)

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
      query_BxL = (inputs_BxL != pad_id).astype(jnp.float32) * has_pattern
      per_position = {  # [..., B, L]
          "n_query": query_BxL,
          "attention_jsd": jsd_PxBxL * query_BxL,
      }
      n_rows = inputs_BxL.shape[0]
      out = {"sequence": {**{k: _sum_by(v, slots["rows"], n_rows) for k, v in per_slot.items()},
                          **{k: v.sum(-1) for k, v in per_position.items()}}}
      for group, n_buckets in self.groups.items():
        ids_N = groups_BxL[group].reshape(-1)
        out[group] = {
            **{k: _sum_by(v, slots[group], n_buckets) for k, v in per_slot.items()},
            **{k: _sum_by(v.reshape(*v.shape[:-2], -1), ids_N, n_buckets)
               for k, v in per_position.items()}}
      return out

    # Batches (and their read-out slots) are split over the mesh's data axis; parameters and
    # the proxy sweep are replicated (`place` them once). Sums per sequence stay split;
    # per-group sums reduce.
    replicated, split = mesh_lib.replicated(self.mesh), mesh_lib.batch_sharding(self.mesh)
    self._program = jax.jit(program, in_shardings=(replicated, replicated, split, split, split))

  def place(self, params, proxy: base.Proxy):
    """(params, proxy) replicated over the mesh: do it once, not per batch."""
    return mesh_lib.replicate(self.mesh, params), mesh_lib.replicate(self.mesh, proxy)

  def slots(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The scored positions of a [B, L] batch gathered into T slots, T the first of
    B*L/16, B*L/4, B*L (rounded up to the mesh's devices) that holds them; the rest pad.
    Three sizes per width keep compilations few (each shape is one)."""
    rows, cols = np.nonzero(batch["scored"])
    n_rows, length = batch["scored"].shape
    n_slots = next(t for t in (mesh_lib.round_up(n_rows * length // 16, self.mesh),
                               mesh_lib.round_up(n_rows * length // 4, self.mesh),
                               n_rows * length) if t >= len(rows))
    pad = n_slots - len(rows)
    take = lambda a, fill: np.concatenate([a[rows, cols], np.full(pad, fill, a.dtype)])
    return {"rows": np.concatenate([rows, np.zeros(pad, rows.dtype)]).astype(np.int32),
            "cols": np.concatenate([cols, np.zeros(pad, cols.dtype)]).astype(np.int32),
            "gold": take(batch["gold"], -1), "scored": take(batch["scored"], False),
            **{g: take(batch[g], -1) for g in self.groups}}

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


def derive(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Metrics from sums whose MODEL_SUMS have shape [...] and PROXY_SUMS [P, ...]; each
  metric comes out [P, ...] (NaN where nothing was counted).

  bits_model: the model's cross-entropy on the gold token, in bits per scored position (bits
  per character for code); shared_errors: of the model's errors, the fraction the proxy makes too (a proxy that
  explains the model's mistakes scores 1); error_overlap: the Jaccard index of the two
  error sets (1 when model and proxy err on exactly the same positions)."""
  s = {k: np.asarray(v, np.float64) for k, v in sums.items()}
  n, shape = s["n_scored"], s["agree"].shape
  model_wrong, proxy_wrong = n - s["correct_model"], n - s["correct_proxy"]
  with np.errstate(invalid="ignore", divide="ignore"):
    return {
        "accuracy_model": np.broadcast_to(s["correct_model"] / n, shape),
        "bits_model": np.broadcast_to(s["nll_model"] / n / np.log(2), shape),
        "accuracy_proxy": s["correct_proxy"] / n,
        "agreement": s["agree"] / n,
        "attention_jsd": s["attention_jsd"] / s["n_query"],
        "tv": s["tv"] / n,
        "kl": s["kl"] / n,
        "shared_errors": s["both_wrong"] / model_wrong,
        "error_overlap": s["both_wrong"] / (model_wrong + proxy_wrong - s["both_wrong"]),
        "n": np.broadcast_to(n, shape),
    }


def _rows(metrics_: dict[str, np.ndarray], index) -> dict:
  """One plain dict of metrics (floats, NaN as None so JSON stays JSON; n as int)."""
  row = {}
  for name, values in metrics_.items():
    v = float(values[index])
    row[name] = int(v) if name == "n" else (None if np.isnan(v) else v)
  return row


BOOTSTRAP_METRICS = ("agreement", "accuracy_proxy", "accuracy_model", "attention_jsd")


@dataclasses.dataclass
class SplitResult:
  """Sums for one split: `sequence` per string (MODEL_SUMS [N], PROXY_SUMS [P, N]) and, per
  group, per bucket (MODEL_SUMS [G], PROXY_SUMS [P, G])."""

  sequence: dict[str, np.ndarray]
  groups: dict[str, dict[str, np.ndarray]]

  @property
  def size(self) -> int:
    return self.sequence["agree"].shape[0]

  def summary(self) -> list[dict]:
    """One dict of metrics per sweep entry."""
    m = derive({k: v.sum(-1) for k, v in self.sequence.items()})
    return [_rows(m, p) for p in range(self.size)]

  def by_group(self, group: str) -> list[list[dict]]:
    """[sweep entry][bucket] -> dict of metrics."""
    m = derive(self.groups[group])
    n_buckets = m["agreement"].shape[-1]
    return [[_rows(m, (p, g)) for g in range(n_buckets)] for p in range(self.size)]

  def stratum(self, group: str, buckets) -> list[dict]:
    """[sweep entry] -> dict of metrics over the union of `buckets` of `group` (e.g. every
    close deeper than the training depth)."""
    m = derive({k: v[..., list(buckets)].sum(-1) for k, v in self.groups[group].items()})
    return [_rows(m, p) for p in range(self.size)]

  def bootstrap(self, n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
                clusters: np.ndarray | None = None) -> list[dict]:
    """Percentile intervals over strings resampled with replacement, per sweep entry:
    {'<metric>_lo': ..., '<metric>_hi': ...} for BOOTSTRAP_METRICS. With `clusters` ([N]
    ids, e.g. the file each window comes from), whole clusters are resampled instead:
    strings of one cluster are not independent, and resampling them alone would make the
    interval too narrow."""
    n = self.sequence["n_scored"].shape[-1]
    if n == 0:
      return [{} for _ in range(self.size)]
    rng = np.random.default_rng(seed)
    if clusters is None:
      counts_RxN = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)
    else:
      _, cluster_N = np.unique(np.asarray(clusters), return_inverse=True)
      c = cluster_N.max() + 1
      counts_RxN = rng.multinomial(c, np.full(c, 1.0 / c), size=n_resamples)[:, cluster_N]
      counts_RxN = counts_RxN.astype(np.float64)
    m = derive({k: v.astype(np.float64) @ counts_RxN.T for k, v in self.sequence.items()})
    tail = 100 * (1 - level) / 2
    out = [{} for _ in range(self.size)]
    for name in BOOTSTRAP_METRICS:
      with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a metric never measured: all NaN
        lo_P, hi_P = np.nanpercentile(m[name], [tail, 100 - tail], axis=-1)
      for p in range(self.size):
        out[p][f"{name}_lo"] = None if np.isnan(lo_P[p]) else float(lo_P[p])
        out[p][f"{name}_hi"] = None if np.isnan(hi_P[p]) else float(hi_P[p])
    return out


def padding(pad_id: int, groups=()) -> dict:
  """What pads a batch of evaluation arrays: PAD inputs, no gold, nothing scored, no bucket."""
  return {"inputs": pad_id, "gold": -1, "scored": False, **{g: -1 for g in groups}}


def length_ladder(length: int, smallest: int = SMALLEST_WIDTH) -> tuple[int, ...]:
  """Batch widths: powers of two from `smallest` below `length`, then `length` itself."""
  widths, w = [], smallest
  while w < length:
    widths.append(w)
    w *= 2
  return (*widths, length)


def fixed_batches(arrays: Mapping[str, np.ndarray], batch_size: int, fill: Mapping[str, int],
                  widths: tuple[int, ...] | None = None
                  ) -> Iterator[tuple[dict, np.ndarray]]:
  """Batches of `batch_size` rows of the [N, L, ...] arrays named in `fill`; the last is
  padded with rows of `fill` values. Yields (batch, indices of its real rows).

  With `widths` (ascending, the last = L), strings are taken shortest first and each batch
  is cut to the smallest width that holds its longest string; a string's length is up to
  its last position whose `inputs` is not padding or that is `scored`."""
  first = arrays[next(iter(fill))]
  n, length = first.shape[:2]
  order = np.arange(n)
  if widths is not None:
    used_NxL = arrays["inputs"] != fill["inputs"]
    if "scored" in arrays:
      used_NxL = used_NxL | arrays["scored"]
    lengths = np.where(used_NxL.any(1), length - np.argmax(used_NxL[:, ::-1], axis=1), 1)
    order = np.argsort(lengths, kind="stable")
  for start in range(0, n, batch_size):
    rows = order[start:start + batch_size]
    width = length if widths is None else next(w for w in widths if w >= lengths[rows].max())
    batch = {}
    for name in fill:
      chunk = arrays[name][rows][:, :width]
      if len(rows) < batch_size:
        pad = np.full((batch_size - len(rows),) + chunk.shape[1:], fill[name], chunk.dtype)
        chunk = np.concatenate([chunk, pad])
      batch[name] = chunk
    yield batch, rows


def evaluate(program: FaithfulnessProgram, params, proxy: base.Proxy,
             arrays: Mapping[str, np.ndarray], batch_size: int, pad_id: int,
             by_length: bool = True) -> SplitResult:
  """Streams one split (`inputs`, `gold`, `scored` and the program's groups, each [N, L])
  through the program in fixed-shape batches; memory holds one batch and the sums. With
  `by_length` (the default), batches are length-bucketed (`fixed_batches`): the sums are
  the same, for less work (`program.shapes` says which batch shapes ran)."""
  fill = padding(pad_id, program.groups)
  mesh_lib.check_divisible(batch_size, program.mesh)
  params, proxy = program.place(params, proxy)
  n, length = arrays["inputs"].shape
  widths = length_ladder(length) if by_length else None
  sequence: dict[str, np.ndarray] = {}
  groups = {g: {k: 0.0 for k in SUMS} for g in program.groups}
  for batch, rows in fixed_batches(arrays, batch_size, fill, widths):
    out = program(params, proxy, batch)
    for k in SUMS:
      per_row = out["sequence"][k]
      if k not in sequence:
        sequence[k] = np.zeros(per_row.shape[:-1] + (n,), np.float64)
      sequence[k][..., rows] = per_row[..., :len(rows)]
      for g in program.groups:
        groups[g][k] = groups[g][k] + out[g][k].astype(np.float64)
  return SplitResult(sequence, groups)


def collect_activations(model, params, inputs_NxL: np.ndarray, pad_id: int,
                        heads: Sequence[base.Head], sites: Sequence[str],
                        batch_size: int = 256, mesh=None) -> list[dict[str, np.ndarray]]:
  """The vectors a proxy is fitted on, per head of `heads`: {site: [N, D]} at every non-PAD
  position. `model`: a `sites.SiteModel` or a `ModelConfig`."""
  model = site_model(model)
  mesh = mesh or mesh_lib.data_mesh()
  batch_size = mesh_lib.round_up(batch_size, mesh)
  split = mesh_lib.batch_sharding(mesh)
  targets = [[sites_lib.target(l, h, s) for s in sites] for l, h in heads]
  wanted = list(dict.fromkeys(t for per_head in targets for t in per_head))
  # A list, not a dict keyed by target: pytree dict keys must sort, and None (the stream's
  # head) does not sort against a head number.
  capture = jax.jit(lambda p, x: [model.run(p, x, capture=wanted)[1][t] for t in wanted],
                    in_shardings=(mesh_lib.replicated(mesh), split))
  params = mesh_lib.replicate(mesh, params)
  vectors: dict[Target, list[np.ndarray]] = {t: [] for t in wanted}
  for batch, rows in fixed_batches({"inputs": inputs_NxL}, batch_size, {"inputs": pad_id}):
    acts = mesh_lib.to_host(capture(params, mesh_lib.shard_batch(mesh, batch)["inputs"]))
    keep = batch["inputs"][:len(rows)] != pad_id
    for t, a in zip(wanted, acts):
      vectors[t].append(a[:len(rows)][keep])
  return [{str(t[2]): np.concatenate(vectors[t]) for t in per_head} for per_head in targets]
