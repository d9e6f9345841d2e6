"""`random_centroids`: the chance baseline of `kmeans`, K centroids drawn at random.

The centroids are K of the fitting vectors chosen uniformly without replacement, with no
Lloyd iteration; each vector is replaced by the nearest, as k-means' proxy does (its arrays
and `apply` are k-means'). What clustering adds over K arbitrary points of the same cloud
is the distance between the two curves. `seed` draws the centroids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from proxies import base, kmeans


def fit(activations: Mapping[str, np.ndarray], ks: Sequence[int], options: Mapping) -> dict:
  sites = sorted(activations)
  groups = [[s] for s in sites] if options["separate"] else [sites]
  k_max = max(ks)
  arrays = {}
  for i, group in enumerate(groups):
    x_NxD = np.concatenate([activations[s] for s in group]).astype(np.float32)
    rng = np.random.default_rng([options["seed"], i])
    padded, valid = [], []
    for k in ks:
      chosen_KxD = x_NxD[rng.choice(len(x_NxD), size=k, replace=False)]
      padded.append(np.pad(chosen_KxD, ((0, k_max - k), (0, 0))))
      valid.append(np.arange(k_max) < k)
    for s in group:
      arrays[f"centroids_{s}"], arrays[f"valid_{s}"] = np.stack(padded), np.stack(valid)
  return arrays


KIND = base.register(base.ProxyKind(
    name="random_centroids", sweep="k", sites=("q", "k"),
    allowed_sites=("q", "k", "v", "resid_pre"), fit=fit, apply=kmeans.apply,
    options={"separate": False, "seed": 0}, sweep_default=(8,), scan_sweep=(4, 16, 64, 256),
    control_of="kmeans",
    sweep_label="K (random centroids)",
    bounds=(base.at_most(kmeans.MAX_K), base.within_vectors),
    checks=(base.one_width_unless_separate,),
    help={"k": "number(s) of centroids, e.g. 2,4,8,16,32",
          "separate": "one draw per site instead of a joint one",
          "seed": "draws the centroids"}))
