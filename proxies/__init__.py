"""Simplified proxies of attention heads, fitted outside and applied inside the forward pass,
and the engine that measures them against the model.

  base.py          - what a proxy is: the spec, the registry of kinds, the fitted pytree
  svd.py, kmeans.py, onehot.py, weight_svd.py, sae.py - the kinds, one module each
  faithfulness.py  - measuring a sweep on a split, joining: program.py (the compiled
                     program), batching.py (length buckets, read-out slots), results.py
                     (sums, metrics, intervals), capture.py (activations through a model's
                     sites)
  metrics.py       - divergences and decisions; storage.py - specs and arrays on disk
"""

# Importing a kind's module registers it in KINDS.
from proxies import svd, kmeans, onehot, weight_svd, sae  # noqa: F401  (isort: skip)
# The chance baselines the scan runs beside svd, kmeans and sae (`ProxyKind.control_of`).
from proxies import random_subspace, random_centroids, random_dictionary  # noqa: F401
from proxies.base import (KINDS, Proxy, ProxyError, ProxyKind, ProxySpec, check, check_heads,
                          fit, make_spec, register)
from proxies.storage import load, save

__all__ = ["KINDS", "Proxy", "ProxyError", "ProxyKind", "ProxySpec", "check", "check_heads",
           "fit", "load", "make_spec", "register", "save"]
