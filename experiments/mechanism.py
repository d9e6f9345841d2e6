"""What a Dyck head's queries and keys carry, and where a proxy's attention lands.

  python -m experiments.mechanism --run=runs/dyck-k20-m10-s0 [--layer=1] [--k=64,256,1024]

The layer-1 head of a Dyck model finds the open bracket that the next close must match:
the most recent unmatched open at the query's depth (Yao et al. 2021). So the match needs
depth, and nothing else of the query. This module measures, on the model's own vectors:
  variance  - the fraction of the variance of the head's queries and keys (over every real
              position of the first n_fit training strings) explained by the input token,
              by the stack depth, and by the two together (between-group variance / total).
              Variance the match does not use is still variance a Euclidean clustering
              spends centroids on;
  landing   - for k-means proxies of the head, joint (one clustering of queries and keys)
              and separate (one per site): at each scored close, whether the proxy's
              strongest key is the matching open, and whether it is at the query's depth
              (the Yao mechanism needs that); the model's own beside it.
              Counted on iid closes at key depth < m and on unseen_depth closes at > m.
Writes <run>/eval/mechanism_layer<L>_head<H>.json and prints a table.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import proxies
from data import dyck_batch
from experiments import cli
from pipeline import api, rundir, tasks
from models import transformer
from models.sites import Site
from proxies import faithfulness

SITES = ("q", "k")
LABELS = ("token", "depth", "depth x token")


def explained(x_NxD: np.ndarray, labels_N: np.ndarray) -> float:
  """Fraction of the total variance of the rows of x that the group means of `labels`
  explain: 1 - within-group sum of squares / total sum of squares."""
  x_NxD = np.asarray(x_NxD, np.float64)
  total = ((x_NxD - x_NxD.mean(0)) ** 2).sum()
  _, group_N = np.unique(labels_N, return_inverse=True)
  counts_G = np.bincount(group_N)
  means_GxD = np.zeros((len(counts_G), x_NxD.shape[1]))
  np.add.at(means_GxD, group_N, x_NxD)
  means_GxD /= counts_G[:, None]
  within = ((x_NxD - means_GxD[group_N]) ** 2).sum()
  return float(1.0 - within / total) if total > 0 else 0.0


def variance(task: tasks.DyckTask, model, params, layer: int, head: int, n_fit: int
             ) -> dict[str, dict[str, float]]:
  """site -> {label: fraction of the site's variance it explains} on training strings.
  `model`: a `models.sites.SiteModel` (or a `ModelConfig`), read through its sites."""
  b = dyck_batch.encode(task.data["train"][:n_fit], task.vocab, task.seq_len)
  real_NxL = b.inputs != task.pad_id
  token_N, depth_N = b.inputs[real_NxL], b.depth[real_NxL]
  labels = {"token": token_N, "depth": depth_N,
            "depth x token": depth_N.astype(np.int64) * task.vocab.size + token_N}
  # The head's vectors at the real positions, in the order of the labels.
  vectors, = faithfulness.collect_activations(model, params, b.inputs, task.pad_id,
                                              [(layer, head)], SITES)
  return {site: {name: explained(vectors[site], lab) for name, lab in labels.items()}
          for site in SITES}


def strongest_keys(model, layer: int, head: int):
  """A jitted (params, intervention or None, inputs [B, L]) -> the key each query of the
  head attends to most, [B, L]. `model`: a `models.sites.SiteModel` with a pattern site
  (or a `ModelConfig`)."""
  model = faithfulness.site_model(model)
  if Site.PATTERN not in model.sites:
    raise ValueError("where attention lands needs the model's pattern site; it has: "
                     f"{', '.join(sorted(map(str, model.sites)))}")
  pattern = (layer, head, Site.PATTERN)

  @jax.jit
  def strongest(params, intervention, inputs_BxL):
    _, captured = model.run(params, inputs_BxL, intervention, capture=[pattern])
    return jnp.argmax(captured[pattern], -1)

  return strongest


def matching_opens(task: tasks.DyckTask, split: str, where_NxL: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(row, query position, key position of the matching open) of each close-predicting
  position that `where_NxL` marks. Position p predicts target p; the open it closes is
  target p - distance, which the model reads at input position p - distance + 1."""
  rows_n, cols_n = np.nonzero(where_NxL)
  distance_NxL = dyck_batch.encode(task.data[split], task.vocab, task.seq_len).distance
  return rows_n, cols_n, cols_n - distance_NxL[rows_n, cols_n] + 1


def landing(task: tasks.DyckTask, model, params, proxy: proxies.Proxy,
            labels: Sequence[dict], where: Sequence[tuple[str, str]], batch_size: int = 128
            ) -> list[dict]:
  """On each (split, stratum) of `where`, for the model and for every setting of `proxy`
  (`labels`: one per setting): the fraction of scored closes whose strongest key is the
  matching open (`on_open`), and whose strongest key is at the query's depth (`at_depth`).
  Strata: shallow = key depth 1..m-1, deep = key depth > m."""
  (layer, head), = proxy.heads
  strongest = strongest_keys(model, layer, head)
  m = task.config.max_depth
  in_stratum = {"shallow": lambda d: (d >= 1) & (d < m), "deep": lambda d: d > m}
  settings = [(dict(label, proxy=proxy.kind), proxy.setting(i))
              for i, label in enumerate(labels)]
  rows = []
  for split, stratum in where:
    a = task.eval_arrays(split)
    rows_n, cols_n, open_n = matching_opens(task, split,
                                            a["scored"] & in_stratum[stratum](a["depth"]))
    depth_n = a["depth"][rows_n, cols_n]  # the depth at a key: the depth after reading it
    for label, intervention in [({"proxy": "model"}, None)] + settings:
      keys_NxL = np.concatenate([
          np.asarray(strongest(params, intervention, a["inputs"][s:s + batch_size]))
          for s in range(0, len(a["inputs"]), batch_size)])
      key_n = keys_NxL[rows_n, cols_n]
      n = max(len(key_n), 1)
      rows.append({**label, "split": split, "stratum": stratum, "n": len(key_n),
                   "on_open": float((key_n == open_n).sum() / n),
                   "at_depth": float((a["depth"][rows_n, key_n] == depth_n).sum() / n)})
  return rows


def kmeans_specs(model, layer: int, head: int, ks: Sequence[int]) -> list[proxies.ProxySpec]:
  """The k-means sweeps measured: queries and keys clustered jointly, then separately
  (`model`: a `models.sites.SiteModel` or a `ModelConfig`, which they are checked against)."""
  model = faithfulness.site_model(model)
  return [proxies.make_spec(model, "kmeans", ks, heads=[(layer, head)], sites=SITES,
                            options={"separate": separate, "seed": 0})
          for separate in (False, True)]


def measure(task: tasks.DyckTask, model, params, layer: int, head: int,
            ks: Sequence[int], n_fit: int,
            fit: Callable[[proxies.ProxySpec], proxies.Proxy] | None = None) -> dict:
  """The variance fractions of the head's queries and keys, and where the attention of
  the model and of k-means proxies (`kmeans_specs`) lands, on `model` (any
  `models.sites.SiteModel` with q, k and pattern sites, or a `ModelConfig`). `fit`: spec
  -> fitted proxy (default: fit on the first n_fit training strings), for a caller that
  has them."""
  fit = fit or (lambda spec: api.Run(task, model, params).fit_spec(spec, n_fit=n_fit).proxy)
  out = {"layer": layer, "head": head, "n_fit": n_fit, "ks": list(ks),
         "variance": variance(task, model, params, layer, head, n_fit), "landing": []}
  where = [("iid", "shallow"), ("unseen_depth", "deep")]
  for spec in kmeans_specs(model, layer, head, ks):
    separate = dict(spec.options)["separate"]
    proxy = fit(spec)
    rows = landing(task, model, params, proxy, spec.labels(), where)
    out["landing"] += [r for r in rows if not (separate and r["proxy"] == "model")]
  return out


def table(result: dict) -> list[str]:
  lines = [f"layer {result['layer']} head {result['head']}: fraction of the variance of "
           f"the head's vectors explained, on {result['n_fit']} training strings"]
  lines.append("site  " + "  ".join(f"{name:>13}" for name in LABELS))
  for site, fractions in result["variance"].items():
    lines.append(f"{site:<4}  " + "  ".join(f"{fractions[name]:>13.3f}" for name in LABELS))
  lines.append("where the strongest key lands at scored closes (on the matching open / at "
               "the query's depth)")
  lines.append(f"{'':<28}" + "".join(f"{s + ' ' + t:>28}" for s, t in
                                     (("iid", "depth<m"), ("unseen_depth", "depth>m"))))
  by = {}
  for r in result["landing"]:
    name = ("model" if r["proxy"] == "model" else
            f"kmeans {'separate' if r['separate'] else 'joint'} K {r['k']}")
    by.setdefault(name, []).append(f"{r['on_open']:.3f} / {r['at_depth']:.3f} (n {r['n']})")
  lines += [f"{name:<28}" + "".join(f"{c:>28}" for c in cells) for name, cells in by.items()]
  return lines


def parse(argv: Sequence[str]) -> argparse.Namespace:
  parser = cli.Parser(prog="python -m experiments.mechanism", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", required=True, help="a trained Dyck run directory")
  parser.add_argument("--layer", type=int, default=None, help="default: the last layer")
  parser.add_argument("--head", type=int, default=0, help="default: 0")
  parser.add_argument("--k", type=cli.int_list, default=[64, 256, 1024],
                      help="k-means sizes, each fitted jointly and separately "
                      "(default: 64,256,1024)")
  parser.add_argument("--n_fit", type=int, default=1000,
                      help="training strings to measure and fit on (default: 1000)")
  return parser.parse_args(argv)


def main(argv: Sequence[str]) -> None:
  args = parse(argv)
  task, model_cfg, params = tasks.load_trained(args.run)
  if task.name != "dyck":
    raise cli.UsageError(f"run {args.run!r} is a {task.name} run; this measures Dyck heads")
  layer = model_cfg.n_layers - 1 if args.layer is None else args.layer
  cli.check_range("layer", layer, 0, model_cfg.n_layers - 1)
  cli.check_range("head", args.head, 0, model_cfg.n_heads - 1)
  cli.check_range("n_fit", args.n_fit, 1, task.n_train)
  result = measure(task, transformer.TransformerSites(model_cfg), params, layer, args.head,
                   args.k, args.n_fit)
  path = os.path.join(args.run, "eval", f"mechanism_layer{layer}_head{args.head}.json")
  rundir.write_json(path, result)
  print("\n".join(table(result)))
  print(f"wrote {path}")


if __name__ == "__main__":
  cli.run_main(main)
