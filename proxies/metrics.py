"""Divergences between distributions along the last axis (natural log), and decisions.

All functions are pure jnp, broadcast over leading axes, and safe where probabilities are 0.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy


def kl_divergence(p: jax.Array, q: jax.Array) -> jax.Array:
  """KL(p || q); infinite where q = 0 < p (never below 0: rounding can leave -1e-9)."""
  return jnp.maximum(jnp.sum(xlogy(p, p) - xlogy(p, q), axis=-1), 0.0)


def entropy(p: jax.Array) -> jax.Array:
  return -jnp.sum(xlogy(p, p), axis=-1)


def js_divergence(p: jax.Array, q: jax.Array) -> jax.Array:
  """Jensen-Shannon divergence, in [0, ln 2], as H((p+q)/2) - (H(p) + H(q))/2.

  This form takes two logarithms per element where the KL form takes four, and when `p` is
  the model's distribution broadcast against a stack of proxies' `q`, H(p) is computed once.
  """
  m = 0.5 * (p + q)
  # H(m) - H(q) / 2 as one sum over one elementwise term (m = 0 only where q = 0, so the
  # term is 0 there): one pass over the elements, not one array per entropy.
  term = jnp.where(m > 0, 0.5 * q * jnp.log(jnp.where(q > 0, q, 1.0)) - m * jnp.log(m), 0.0)
  jsd = jnp.sum(term, axis=-1) - 0.5 * entropy(p)
  return jnp.maximum(jsd, 0.0)  # rounding can leave -1e-8 where p == q


def total_variation(p: jax.Array, q: jax.Array) -> jax.Array:
  """Total variation distance, in [0, 1]."""
  return 0.5 * jnp.sum(jnp.abs(p - q), axis=-1)


@dataclasses.dataclass(frozen=True)
class Decision:
  """How a next-token distribution is judged at a scored position.

  The prediction is the argmax over the vocabulary slice [lo, hi) (for Dyck: the closing
  brackets, or everything). With `threshold`, a position is correct when the gold token
  holds more than `threshold` of the mass of that slice (Yao et al.'s rule); otherwise
  when the prediction equals the gold token."""

  lo: int
  hi: int
  threshold: float | None = None

  def predict(self, logits: jax.Array) -> jax.Array:
    return jnp.argmax(logits[..., self.lo:self.hi], axis=-1) + self.lo

  def correct(self, logits: jax.Array, gold: jax.Array) -> jax.Array:
    if self.threshold is None:
      return self.predict(logits) == gold
    probs = jax.nn.softmax(logits[..., self.lo:self.hi], axis=-1)
    index = jnp.clip(gold - self.lo, 0, self.hi - self.lo - 1)
    gold_mass = jnp.take_along_axis(probs, index[..., None], axis=-1)[..., 0]
    return (gold_mass > self.threshold) & (gold >= self.lo) & (gold < self.hi)
