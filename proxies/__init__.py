"""Simplified proxies of one attention head, fitted outside and applied inside the forward pass."""

# Importing a kind's module registers it in KINDS.
from proxies import svd, kmeans, onehot, weight_svd  # noqa: F401  (isort: skip)
from proxies.base import KINDS, Proxy, ProxyKind, ProxySpec, fit, register

__all__ = ["KINDS", "Proxy", "ProxyKind", "ProxySpec", "fit", "register"]
