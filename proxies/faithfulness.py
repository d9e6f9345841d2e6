"""Faithfulness of a proxy sweep to the model, in one compiled program per batch shape.

`FaithfulnessProgram` jits one function that runs the model once and every proxy setting
of a sweep (vmapped over the stacked `Proxy`), and reduces what it needs to sums per
sequence (for bootstrap intervals over strings) and per bucket of each group (depth,
distance). Work upstream of the simplified site does not depend on the proxy, so vmap leaves it
unbatched: it is computed once, not once per setting. Splits stream through in fixed-shape
batches, so one compilation serves every split and memory does not grow with the split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from models import mesh as mesh_lib, transformer
from proxies import base, metrics

# Sums returned by the program; [B] (or per group [G]) for the model, [P, B] ([P, G]) for
# the proxies. `both_wrong` counts scored positions where model and proxy both err.
MODEL_SUMS = ("n_scored", "n_query", "correct_model", "nll_model")
PROXY_SUMS = ("correct_proxy", "agree", "both_wrong", "tv", "kl", "attention_jsd")
SUMS = MODEL_SUMS + PROXY_SUMS


class FaithfulnessProgram:
  """Model vs. every setting of one proxy sweep; `__call__` on one batch of arrays:
  `inputs`, targets-aligned `gold`, `scored` (bool), and one int array per group - all
  [B, L]. A group (e.g. depth) buckets positions; `groups` maps its name to its number of
  buckets, and positions whose bucket is outside 0..n-1 belong to none."""

  def __init__(self, cfg: transformer.ModelConfig, decision: metrics.Decision, pad_id: int,
               groups: Mapping[str, int] | None = None, mesh=None):
    model = transformer.Transformer(cfg)
    self.groups = dict(groups or {})
    self.mesh = mesh or mesh_lib.data_mesh()

    def run(params, inputs_BxL, proxy, layer, head):
      logits_BxLxV, state = model.apply({"params": params}, inputs_BxL, intervention=proxy,
                                        mutable=["intermediates"])
      pattern = state["intermediates"][f"block_{layer}"]["attention"]["pattern"][0]
      return logits_BxLxV, pattern[:, head]

    def run_sweep(params, inputs_BxL, proxy: base.Proxy):
      if not jax.tree_util.tree_leaves(proxy):  # a kind without parameters: one setting
        out = run(params, inputs_BxL, proxy, proxy.layer, proxy.head)
        return jax.tree_util.tree_map(lambda a: a[None], out)
      return jax.vmap(lambda p: run(params, inputs_BxL, p, proxy.layer, proxy.head))(proxy)

    def program(params, proxy: base.Proxy, inputs_BxL, gold_BxL, scored_BxL, groups):
      logits_BxLxV, pattern_BxLxL = run(params, inputs_BxL, None, proxy.layer, proxy.head)
      logits_PxBxLxV, pattern_PxBxLxL = run_sweep(params, inputs_BxL, proxy)

      scored = scored_BxL.astype(jnp.float32)
      query = (inputs_BxL != pad_id).astype(jnp.float32)
      probs_BxLxV = jax.nn.softmax(logits_BxLxV)
      probs_PxBxLxV = jax.nn.softmax(logits_PxBxLxV)
      correct_model = decision.correct(logits_BxLxV, gold_BxL)
      correct_proxy = decision.correct(logits_PxBxLxV, gold_BxL)
      log_probs_BxLxV = jax.nn.log_softmax(logits_BxLxV)
      gold_log_prob_BxL = jnp.take_along_axis(
          log_probs_BxLxV, jnp.clip(gold_BxL, 0, None)[..., None], axis=-1)[..., 0]
      per_position = {
          "n_scored": scored,
          "n_query": query,
          "correct_model": correct_model * scored,
          "nll_model": -gold_log_prob_BxL * scored,
          "correct_proxy": correct_proxy * scored,
          "agree": (decision.predict(logits_PxBxLxV) == decision.predict(logits_BxLxV)) * scored,
          "both_wrong": (~correct_model & ~correct_proxy) * scored,
          "tv": metrics.total_variation(probs_BxLxV, probs_PxBxLxV) * scored,
          "kl": metrics.kl_divergence(probs_BxLxV, probs_PxBxLxV) * scored,
          "attention_jsd": metrics.js_divergence(pattern_BxLxL, pattern_PxBxLxL) * query,
      }
      out = {"sequence": {name: v.sum(-1) for name, v in per_position.items()}}
      for group, n_buckets in self.groups.items():
        bucket_BxLxG = jax.nn.one_hot(groups[group], n_buckets)  # out of range: all zeros
        out[group] = {name: jnp.einsum("...bl,blg->...g", v, bucket_BxLxG)
                      for name, v in per_position.items()}
      return out

    # Batches are split over the mesh's data axis; parameters and the proxy sweep are
    # replicated (`place` them once). Sums per sequence stay split; per-group sums reduce.
    replicated, split = mesh_lib.replicated(self.mesh), mesh_lib.batch_sharding(self.mesh)
    self._program = jax.jit(program, in_shardings=(replicated, replicated, split, split, split,
                                                   {g: split for g in self.groups}))

  def place(self, params, proxy: base.Proxy):
    """(params, proxy) replicated over the mesh: do it once, not per batch."""
    return mesh_lib.replicate(self.mesh, params), mesh_lib.replicate(self.mesh, proxy)

  def __call__(self, params, proxy: base.Proxy, batch: Mapping[str, np.ndarray]) -> dict:
    names = ("inputs", "gold", "scored", *self.groups)
    b = mesh_lib.shard_batch(self.mesh, {k: batch[k] for k in names})
    out = self._program(params, proxy, b["inputs"], b["gold"], b["scored"],
                        {g: b[g] for g in self.groups})
    return mesh_lib.to_host(out)


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

  def bootstrap(self, n_resamples: int = 1000, seed: int = 0,
                level: float = 0.95) -> list[dict]:
    """Percentile intervals over strings resampled with replacement, per sweep entry:
    {'<metric>_lo': ..., '<metric>_hi': ...} for BOOTSTRAP_METRICS."""
    n = self.sequence["n_scored"].shape[-1]
    if n == 0:
      return [{} for _ in range(self.size)]
    rng = np.random.default_rng(seed)
    counts_RxN = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)
    m = derive({k: v.astype(np.float64) @ counts_RxN.T for k, v in self.sequence.items()})
    tail = 100 * (1 - level) / 2
    out = [{} for _ in range(self.size)]
    for name in BOOTSTRAP_METRICS:
      with np.errstate(invalid="ignore"):
        lo_P, hi_P = np.nanpercentile(m[name], [tail, 100 - tail], axis=-1)
      for p in range(self.size):
        out[p][f"{name}_lo"] = None if np.isnan(lo_P[p]) else float(lo_P[p])
        out[p][f"{name}_hi"] = None if np.isnan(hi_P[p]) else float(hi_P[p])
    return out


def padding(pad_id: int, groups=()) -> dict:
  """What pads a batch of evaluation arrays: PAD inputs, no gold, nothing scored, no bucket."""
  return {"inputs": pad_id, "gold": -1, "scored": False, **{g: -1 for g in groups}}


def fixed_batches(arrays: Mapping[str, np.ndarray], batch_size: int,
                  fill: Mapping[str, int]) -> Iterator[tuple[dict, int]]:
  """Slices the [N, ...] arrays named in `fill` into batches of `batch_size` rows; the last
  is padded with rows of `fill` values. Yields (batch, number of real rows)."""
  n = len(arrays[next(iter(fill))])
  for start in range(0, n, batch_size):
    real = min(batch_size, n - start)
    batch = {}
    for name in fill:
      a = arrays[name]
      chunk = a[start:start + real]
      if real < batch_size:
        pad = np.full((batch_size - real,) + a.shape[1:], fill[name], a.dtype)
        chunk = np.concatenate([chunk, pad])
      batch[name] = chunk
    yield batch, real


def evaluate(program: FaithfulnessProgram, params, proxy: base.Proxy,
             arrays: Mapping[str, np.ndarray], batch_size: int, pad_id: int) -> SplitResult:
  """Streams one split (`inputs`, `gold`, `scored` and the program's groups, each [N, L])
  through the program in fixed-shape batches; memory holds one batch and the sums."""
  fill = padding(pad_id, program.groups)
  mesh_lib.check_divisible(batch_size, program.mesh)
  params, proxy = program.place(params, proxy)
  sequence: dict[str, list[np.ndarray]] = {k: [] for k in SUMS}
  groups = {g: {k: 0.0 for k in SUMS} for g in program.groups}
  for batch, real in fixed_batches(arrays, batch_size, fill):
    out = program(params, proxy, batch)
    for k in SUMS:
      sequence[k].append(out["sequence"][k][..., :real])
      for g in program.groups:
        groups[g][k] = groups[g][k] + out[g][k].astype(np.float64)
  return SplitResult({k: np.concatenate(v, axis=-1) for k, v in sequence.items()}, groups)


def collect_activations(cfg: transformer.ModelConfig, params, inputs_NxL: np.ndarray,
                        pad_id: int, layer: int, head: int, sites: tuple[str, ...],
                        batch_size: int = 256, mesh=None) -> dict[str, np.ndarray]:
  """The vectors a proxy is fitted on: `sites` of one head at every non-PAD position."""
  mesh = mesh or mesh_lib.data_mesh()
  batch_size = mesh_lib.round_up(batch_size, mesh)
  split = mesh_lib.batch_sharding(mesh)
  capture = jax.jit(lambda p, x: {s: transformer.capture(cfg, p, x, layer, s) for s in sites},
                    in_shardings=(mesh_lib.replicated(mesh), split))
  params = mesh_lib.replicate(mesh, params)
  rows: dict[str, list[np.ndarray]] = {s: [] for s in sites}
  for batch, real in fixed_batches({"inputs": inputs_NxL}, batch_size, {"inputs": pad_id}):
    acts = mesh_lib.to_host(capture(params, mesh_lib.shard_batch(mesh, batch)["inputs"]))
    keep = batch["inputs"][:real] != pad_id
    for s in sites:
      a = acts[s][:real]
      a = a if s == "resid_pre" else a[:, :, head]  # [B, L, H, D] -> one head
      rows[s].append(a[keep])
  return {s: np.concatenate(v) for s, v in rows.items()}
