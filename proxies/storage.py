"""Fitted proxies on disk: the spec as JSON, the arrays as .npz, no pickle.

  save(path, spec, proxy, info)  writes <path>.json and <path>.npz (atomically, each)
  load(path)                     -> (spec, proxy, info), checked against each other

So a fit is done once and evaluated on any number of new splits later. The JSON holds the
spec, a format version, `info` (plain JSON the caller keeps beside the fit, e.g. what it
was fitted on) and, per head, the name and shape of every array; the .npz is read
with `allow_pickle=False`, so loading a file executes nothing.
"""

from __future__ import annotations

import io
import json

import numpy as np

from models import atomic
from proxies.base import Proxy, ProxyError, ProxySpec

FORMAT = 1


def _paths(path: str) -> tuple[str, str]:
  stem = path[:-5] if path.endswith(".json") else path[:-4] if path.endswith(".npz") else path
  return f"{stem}.json", f"{stem}.npz"


def save(path: str, spec: ProxySpec, proxy: Proxy, info: dict | None = None
         ) -> tuple[str, str]:
  """Writes the spec and the fitted arrays beside each other; returns both paths."""
  if (proxy.kind, proxy.heads, proxy.sites) != (spec.kind, spec.heads, spec.sites):
    raise ProxyError(f"the proxy ({proxy.kind} at {proxy.heads}) is not a fit of this spec "
                     f"({spec.kind} at {spec.heads})")
  json_path, npz_path = _paths(path)
  flat = {f"head{i}/{name}": np.asarray(a)
          for i, arrays in enumerate(proxy.arrays) for name, a in arrays.items()}
  meta = {"format": FORMAT, "spec": spec.to_dict(), "info": info or {},
          "arrays": [{name: list(np.shape(a)) for name, a in arrays.items()}
                     for arrays in proxy.arrays]}
  buffer = io.BytesIO()
  np.savez(buffer, **flat)
  atomic.write_bytes(npz_path, buffer.getvalue())
  atomic.write_text(json_path, json.dumps(meta, indent=1))  # last: it names the arrays
  return json_path, npz_path


def load(path: str) -> tuple[ProxySpec, Proxy, dict]:
  """The spec and the fitted proxy written by `save`; ProxyError if either file is missing,
  malformed, or the two do not match."""
  json_path, npz_path = _paths(path)
  try:
    with open(json_path, encoding="utf-8") as f:
      meta = json.load(f)
    with np.load(npz_path, allow_pickle=False) as npz:
      flat = {name: npz[name] for name in npz.files}
  except (OSError, ValueError) as e:
    raise ProxyError(f"cannot read the fitted proxy {json_path!r} / {npz_path!r}: {e}") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    raise ProxyError(f"{json_path} is not a fitted proxy of format {FORMAT}")
  spec = ProxySpec.from_dict(meta.get("spec", {}))
  shapes = meta.get("arrays", [])
  if len(shapes) != len(spec.heads):
    raise ProxyError(f"{json_path}: {len(shapes)} heads of arrays for {len(spec.heads)} heads")
  arrays = []
  for i, names in enumerate(shapes):
    head = {}
    for name, shape in names.items():
      a = flat.get(f"head{i}/{name}")
      if a is None or list(a.shape) != list(shape):
        raise ProxyError(f"{npz_path}: array head{i}/{name} is missing or not of shape {shape}")
      head[name] = a
    arrays.append(head)
  proxy = Proxy(arrays=tuple(arrays), kind=spec.kind, heads=spec.heads, sites=spec.sites)
  return spec, proxy, dict(meta.get("info") or {})
