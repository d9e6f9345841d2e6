"""Simplified proxies of one attention head, fitted outside and applied inside the forward pass."""

# Importing a kind's module registers it in KINDS.
from proxies import svd, kmeans, onehot, weight_svd, sae  # noqa: F401  (isort: skip)
from proxies.base import KINDS, Proxy, ProxyError, ProxyKind, ProxySpec, fit, register
from proxies.storage import load, save

__all__ = ["KINDS", "Proxy", "ProxyError", "ProxyKind", "ProxySpec", "fit", "load", "register", "save"]
