"""Simplified proxies of one attention head, fitted outside and applied inside the forward pass."""

from proxies import svd  # noqa: F401  (registers the kind)
from proxies.base import KINDS, Proxy, ProxyKind, ProxySpec, fit, register

__all__ = ["KINDS", "Proxy", "ProxyKind", "ProxySpec", "fit", "register"]
