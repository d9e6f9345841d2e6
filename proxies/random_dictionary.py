"""`random_dictionary`: the chance baseline of `sae`, a TopK autoencoder never trained.

The same width and k as the `sae` proxy, with random unit decoder atoms, the encoder their
transpose and the pre-encoder bias the fitting vectors' mean: the sae's initialization,
before any step of Adam. What training the dictionary adds is the distance between the
two curves. Its arrays and `apply` are the sae's. `seed` draws the atoms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from proxies import base, sae


def fit(activations: Mapping[str, np.ndarray], ks: Sequence[int], options: Mapping) -> dict:
  sites = sorted(activations)
  groups = [[s] for s in sites] if options["separate"] else [sites]
  arrays = {}
  for i, group in enumerate(groups):
    x_NxD = np.concatenate([activations[s] for s in group]).astype(np.float32)
    width = int(options["width"]) or sae.WIDTH_MULTIPLE * x_NxD.shape[1]
    drawn = sae.initial(x_NxD, width, options["seed"] + i)
    for s in group:
      # One copy per setting: the sweep's settings differ only in k (the selector).
      arrays.update({f"{name}_{s}": np.stack([v] * len(ks)) for name, v in drawn.items()})
      arrays[f"select_{s}"] = sae.selectors(ks)
  return arrays


KIND = base.register(base.ProxyKind(
    name="random_dictionary", sweep="k", sites=("q", "k"),
    allowed_sites=("q", "k", "v", "resid_pre"), fit=fit, apply=sae.apply,
    diagnose=sae.diagnose, diagnostics=("fvu", "l0", "dead"),
    options={"separate": False, "width": 0, "seed": 0},
    sweep_default=(1, 2, 4, 8, 16, 32), scan_sweep=(1, 2, 4, 8, 16, 32), control_of="sae",
    sweep_label="k (random atoms)",
    bounds=(sae.within_latents, base.within_vectors), checks=(base.one_width_unless_separate,),
    help={"k": "active latents, e.g. 1,2,4,8,16,32",
          "separate": "one dictionary per site instead of a joint one",
          "width": "latents (0: 4x the site's width)",
          "seed": "draws the atoms"}))
