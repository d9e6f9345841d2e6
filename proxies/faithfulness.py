"""Faithfulness of a proxy sweep to the model, in one compiled program per batch shape.

`FaithfulnessProgram` jits one function that runs the model once and every proxy setting
of a sweep (vmapped over the stacked `Proxy`), and reduces what it needs to per-sequence
sums. Work upstream of the simplified site does not depend on the proxy, so vmap leaves it
unbatched: it is computed once, not once per setting. Splits stream through in fixed-shape
batches, so one compilation serves every split and memory does not grow with the split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from models import transformer
from proxies import base, metrics

# Per-sequence sums returned by the program; [B] for the model, [P, B] for the proxies.
MODEL_SUMS = ("n_scored", "n_query", "correct_model")
PROXY_SUMS = ("correct_proxy", "agree", "tv", "kl", "attention_jsd")


class FaithfulnessProgram:
  """Model vs. every setting of one proxy sweep; `__call__` on one batch of arrays:
  inputs, targets-aligned `gold`, `scored` (bool) - all [B, L]."""

  def __init__(self, cfg: transformer.ModelConfig, decision: metrics.Decision, pad_id: int):
    model = transformer.Transformer(cfg)

    def run(params, inputs_BxL, proxy, layer, head):
      logits_BxLxV, state = model.apply({"params": params}, inputs_BxL, intervention=proxy,
                                        mutable=["intermediates"])
      pattern = state["intermediates"][f"block_{layer}"]["attention"]["pattern"][0]
      return logits_BxLxV, pattern[:, head]

    def program(params, proxy: base.Proxy, inputs_BxL, gold_BxL, scored_BxL):
      layer, head = proxy.layer, proxy.head
      logits_BxLxV, pattern_BxLxL = run(params, inputs_BxL, None, layer, head)
      logits_PxBxLxV, pattern_PxBxLxL = jax.vmap(
          lambda p: run(params, inputs_BxL, p, layer, head))(proxy)

      scored = scored_BxL.astype(jnp.float32)
      query = (inputs_BxL != pad_id).astype(jnp.float32)
      probs_BxLxV = jax.nn.softmax(logits_BxLxV)
      probs_PxBxLxV = jax.nn.softmax(logits_PxBxLxV)
      per_position = {
          "correct_proxy": decision.correct(logits_PxBxLxV, gold_BxL) * scored,
          "agree": (decision.predict(logits_PxBxLxV) == decision.predict(logits_BxLxV)) * scored,
          "tv": metrics.total_variation(probs_BxLxV, probs_PxBxLxV) * scored,
          "kl": metrics.kl_divergence(probs_BxLxV, probs_PxBxLxV) * scored,
          "attention_jsd": metrics.js_divergence(pattern_BxLxL, pattern_PxBxLxL) * query,
      }
      sums = {name: v.sum(-1) for name, v in per_position.items()}
      sums["n_scored"] = scored.sum(-1)
      sums["n_query"] = query.sum(-1)
      sums["correct_model"] = (decision.correct(logits_BxLxV, gold_BxL) * scored).sum(-1)
      return sums

    self._program = jax.jit(program)

  def __call__(self, params, proxy: base.Proxy, batch: Mapping[str, np.ndarray]) -> dict:
    out = self._program(params, proxy, batch["inputs"], batch["gold"], batch["scored"])
    return jax.tree_util.tree_map(np.asarray, out)


@dataclasses.dataclass
class SplitResult:
  """Per-sequence sums for one split: MODEL_SUMS [N], PROXY_SUMS [P, N]."""

  sums: dict[str, np.ndarray]

  def summary(self) -> list[dict]:
    """One dict of metrics per sweep entry."""
    s = {k: v.astype(np.float64).sum(-1) for k, v in self.sums.items()}
    n, q = s["n_scored"], s["n_query"]
    ratio = lambda a, b: float(a / b) if b else float("nan")
    return [{
        "accuracy_model": ratio(s["correct_model"], n),
        "accuracy_proxy": ratio(s["correct_proxy"][p], n),
        "agreement": ratio(s["agree"][p], n),
        "attention_jsd": ratio(s["attention_jsd"][p], q),
        "tv": ratio(s["tv"][p], n),
        "kl": ratio(s["kl"][p], n),
        "n": int(n),
    } for p in range(s["agree"].shape[0])]


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
  """Streams one split (`inputs`, `gold`, `scored`, each [N, L]) through the program."""
  fill = {"inputs": pad_id, "gold": -1, "scored": False}
  parts: dict[str, list[np.ndarray]] = {k: [] for k in MODEL_SUMS + PROXY_SUMS}
  for batch, real in fixed_batches(arrays, batch_size, fill):
    out = program(params, proxy, batch)
    for k in parts:
      parts[k].append(out[k][..., :real])
  return SplitResult({k: np.concatenate(v, axis=-1) for k, v in parts.items()})


def collect_activations(cfg: transformer.ModelConfig, params, inputs_NxL: np.ndarray,
                        pad_id: int, layer: int, head: int, sites: tuple[str, ...],
                        batch_size: int = 256) -> dict[str, np.ndarray]:
  """The vectors a proxy is fitted on: `sites` of one head at every non-PAD position."""
  capture = jax.jit(lambda p, x: {s: transformer.capture(cfg, p, x, layer, s) for s in sites})
  rows: dict[str, list[np.ndarray]] = {s: [] for s in sites}
  for batch, real in fixed_batches({"inputs": inputs_NxL}, batch_size, {"inputs": pad_id}):
    acts = capture(params, batch["inputs"])
    keep = batch["inputs"][:real] != pad_id
    for s in sites:
      a = np.asarray(acts[s][:real])
      a = a if s == "resid_pre" else a[:, :, head]  # [B, L, H, D] -> one head
      rows[s].append(a[keep])
  return {s: np.concatenate(v) for s, v in rows.items()}
