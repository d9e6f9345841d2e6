"""Activations of any model, read through its site interface (`models.sites.SiteModel`): the
one way vectors are captured, for fitting proxies (`collect_activations`), and for the
measurements of experiments/ (`capture`: a head's queries and keys, its patterns), so
that each runs on every model an adapter reaches, not on the built-in one alone."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax
import numpy as np

from models import mesh as mesh_lib, sites as sites_lib, transformer
from models.sites import Target
from proxies import base, batching


def site_model(model) -> sites_lib.SiteModel:
  """A `SiteModel`: the model itself, or the built-in Transformer of a `ModelConfig`."""
  return transformer.TransformerSites(model) if isinstance(model, transformer.ModelConfig) \
      else model


def _captured_batches(model, params, inputs_NxL: np.ndarray, wanted: Sequence[Target],
                      pad_id: int, batch_size: int, mesh
                      ) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
  """(inputs [b, L], the value of each of `wanted` [b, L, ...]) per batch of the sequences
  in order, b their real rows; one compiled program, batches split over `mesh`."""
  model = site_model(model)
  missing = sorted({str(t[2]) for t in wanted} - set(map(str, model.sites)))
  if missing:
    raise ValueError(f"the model exposes no {', '.join(missing)} site; it has: "
                     f"{', '.join(sorted(map(str, model.sites)))}")
  mesh = mesh or mesh_lib.data_mesh()
  batch_size = mesh_lib.round_up(batch_size, mesh)
  split = mesh_lib.batch_sharding(mesh)
  # A list, not a dict keyed by target: pytree dict keys must sort, and None (the stream's
  # head) does not sort against a head number.
  run = jax.jit(lambda p, x: [model.run(p, x, capture=wanted)[1][t] for t in wanted],
                in_shardings=(mesh_lib.replicated(mesh), split))
  params = mesh_lib.replicate(mesh, params)
  for batch, rows in batching.fixed_batches({"inputs": inputs_NxL}, batch_size,
                                            {"inputs": pad_id}):
    acts = mesh_lib.to_host(run(params, mesh_lib.shard_batch(mesh, batch)["inputs"]))
    yield batch["inputs"][:len(rows)], [a[:len(rows)] for a in acts]


def capture(model, params, inputs_NxL: np.ndarray, targets: Sequence[Target],
            pad_id: int = 0, batch_size: int = 256, mesh=None) -> list[np.ndarray]:
  """The value of each of `targets` ((layer, head, site) triples) on every sequence, as the
  rest of the model saw it: [N, L, D] for a head's q, k or v, [N, L, L] for its pattern,
  [N, L, M] for the stream. `model`: a `sites.SiteModel` or a `ModelConfig`; `pad_id`
  fills the rows that pad the last batch (dropped)."""
  wanted = [sites_lib.target(*t) for t in targets]
  unique = list(dict.fromkeys(wanted))
  got: dict[Target, list[np.ndarray]] = {t: [] for t in unique}
  for _, acts in _captured_batches(model, params, inputs_NxL, unique, pad_id, batch_size,
                                   mesh):
    for t, a in zip(unique, acts):
      got[t].append(a)
  return [np.concatenate(got[t]) for t in wanted]


def collect_activations(model, params, inputs_NxL: np.ndarray, pad_id: int,
                        heads: Sequence[base.Head], sites: Sequence[str],
                        batch_size: int = 256, mesh=None) -> list[dict[str, np.ndarray]]:
  """The vectors a proxy is fitted on, per head of `heads`: {site: [N, D]} at every non-PAD
  position (in order: sequence, then position). `model`: a `sites.SiteModel` or a
  `ModelConfig`."""
  targets = [[sites_lib.target(l, h, s) for s in sites] for l, h in heads]
  wanted = list(dict.fromkeys(t for per_head in targets for t in per_head))
  vectors: dict[Target, list[np.ndarray]] = {t: [] for t in wanted}
  for inputs_BxL, acts in _captured_batches(model, params, inputs_NxL, wanted, pad_id,
                                            batch_size, mesh):
    keep = inputs_BxL != pad_id
    for t, a in zip(wanted, acts):
      vectors[t].append(a[keep])
  return [{str(t[2]): np.concatenate(vectors[t]) for t in per_head} for per_head in targets]
