"""`random_subspace`: the chance baseline of `svd`, a random rank-r subspace.

Each key and query is projected on r orthonormal directions drawn at random (uniformly,
by a QR decomposition of a Gaussian matrix), not on the top-r singular directions of the
head's vectors: what an svd proxy's faithfulness owes to the structure it found, rather
than to its rank alone, is the distance between the two curves. The arrays are svd's (a
projector and a zero mean per site), so it is applied by svd's `apply`; nested ranks share
their directions (rank r keeps the first r of one draw). `seed` draws the subspace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from proxies import base, svd


def random_directions(width: int, seed: int) -> np.ndarray:
  """[D, D]: orthonormal columns, uniformly distributed (QR of a Gaussian, signs fixed)."""
  q_DxD, r_DxD = np.linalg.qr(np.random.default_rng(seed).standard_normal((width, width)))
  return q_DxD * np.sign(np.diag(r_DxD))


def fit(activations: Mapping[str, np.ndarray], ranks: Sequence[int], options: Mapping) -> dict:
  sites = sorted(activations)
  arrays = {}
  for i, s in enumerate(sites):
    width = activations[s].shape[1]
    # Joint: one subspace for every site (as svd's joint basis); separate: one each.
    directions_DxD = random_directions(width, options["seed"] + (i if options["separate"] else 0))
    arrays[f"projector_{s}"] = np.stack([svd.projector(directions_DxD, r) for r in ranks])
    arrays[f"mean_{s}"] = np.zeros((len(ranks), width))
  return {k: v.astype(np.float32) for k, v in arrays.items()}


KIND = base.register(base.ProxyKind(
    name="random_subspace", sweep="rank", sites=("q", "k"),
    allowed_sites=("q", "k", "v", "resid_pre"), fit=fit, apply=svd.apply,
    options={"separate": False, "seed": 0}, sweep_default=(4,),
    scan_sweep=(1, 2, 4, 8, 16, 32, 64), control_of="svd",
    sweep_label="rank (random directions)",
    bounds=(base.within_width,), checks=(base.one_width_unless_separate,),
    help={"rank": "rank(s) of the random subspace, e.g. 1,2,4,8",
          "separate": "one subspace per site instead of a joint one",
          "seed": "draws the subspace"}))
