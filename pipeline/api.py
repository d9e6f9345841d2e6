"""The Python API: the engine behind evaluate.py, for notebooks and scripts.

  from pipeline.api import load_run
  run = load_run("runs/dyck-k20-m10-s0")
  sweep = run.fit("svd", [1, 2, 4, 8], heads=[(0, 0), (1, 0)])   # both layers' heads at once
  result = run.evaluate(sweep, splits=["iid", "unseen_depth"])
  result.rows             # plain dicts, one per split x setting (as evaluate.py writes them)
  result.by("depth")      # one per split x setting x depth bucket
  sweep.save("svd_both")  # svd_both.json + svd_both.npz; Sweep.load("svd_both") reads it

Bad requests raise domain errors (`proxies.ProxyError`, `pipeline.errors.RunError`, both
ValueErrors) and never exit the process. A `Run` is a task (its data and splits), a model
seen through the site interface (`models.sites.SiteModel`: the built-in Transformer, or any
Flax Linen model through `models.sites.LinenSites`) and its parameters. Evaluations share
one compiled program per (model, scoring), so a second `evaluate` of the same shapes
compiles nothing (`result.compilations`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import proxies
from pipeline import errors, evaluation, tasks
from models import transformer
from models.sites import SiteModel
from proxies import faithfulness


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A fitted proxy sweep: what was asked (`spec`) and the fitted arrays (`proxy`)."""

  spec: proxies.ProxySpec
  proxy: proxies.Proxy
  n_fit: int | None = None  # training strings fitted on (None: no data)

  @property
  def labels(self) -> list[dict]:
    return self.spec.labels()

  def save(self, path: str) -> tuple[str, str]:
    """Writes <path>.json (the spec) and <path>.npz (the arrays); no pickle."""
    return proxies.save(path, self.spec, self.proxy, {"n_fit": self.n_fit})

  @classmethod
  def load(cls, path: str) -> "Sweep":
    spec, proxy, info = proxies.load(path)
    return cls(spec, proxy, info.get("n_fit"))


@dataclasses.dataclass(frozen=True)
class Result:
  rows: list[dict]  # split x setting
  group_rows: list[dict]  # split x setting x bucket of each group
  compilations: int  # XLA compilations this evaluation made

  def by(self, group: str) -> list[dict]:
    """The rows of one group (e.g. 'depth', 'distance'), one per split x setting x bucket."""
    out = [r for r in self.group_rows if r["group"] == group]
    if not out:
      known = sorted({r["group"] for r in self.group_rows})
      raise errors.RunError(f"no group {group!r}; this task has: {', '.join(known)}")
    return out


@dataclasses.dataclass
class Run:
  """A task, a model (a `SiteModel`, or a `ModelConfig` of the built-in Transformer) and its
  parameters."""

  task: Any
  model: SiteModel
  params: Any

  def __post_init__(self):
    self.model = faithfulness.site_model(self.model)

  def fit(self, kind: str, values: Iterable[int] = (), *,
          heads: Sequence[tuple[int, int]] | None = None, sites: Sequence[str] | None = None,
          n_fit: int = 1000, **options) -> Sweep:
    """Fits a sweep of `kind` (svd, kmeans, onehot, weight_svd, or any registered kind) at
    each of `heads` (default: head 0 of the last layer) on `sites` (default: the kind's),
    on the first `n_fit` training strings. `values`: the ranks or K of the sweep; `options`:
    the kind's options (e.g. separate=True)."""
    if kind not in proxies.KINDS:
      raise proxies.ProxyError(f"unknown proxy kind {kind!r}; choose one of: "
                               f"{', '.join(proxies.KINDS)}")
    known = proxies.KINDS[kind]
    unknown = set(options) - set(known.options)
    if unknown:
      raise proxies.ProxyError(f"{kind} has no option {', '.join(sorted(unknown))}; its "
                               f"options: {', '.join(known.options) or 'none'}")
    heads = heads if heads is not None else [(self.model.n_layers - 1, 0)]
    for layer, head in heads:
      if not (0 <= layer < self.model.n_layers and 0 <= head < self.model.n_heads):
        raise proxies.ProxyError(f"no head ({layer}, {head}) in a model of "
                                 f"{self.model.n_layers} layers x {self.model.n_heads} heads")
    spec = proxies.ProxySpec(kind, tuple(heads), tuple(sites or known.sites), tuple(values),
                             tuple({**known.options, **options}.items()))
    n_fit = min(n_fit, self.task.n_train)
    fitted = evaluation.fit_proxy(self.task, self.model, self.params, spec, n_fit)
    return Sweep(spec, fitted, n_fit if known.fits_on == "activations" else None)

  def evaluate(self, sweep: Sweep, splits: Sequence[str] | None = None, *,
               scoring: str | None = None, batch_size: int = 256, seed: int = 0,
               n_bootstrap: int = 1000) -> Result:
    """The model and every setting of `sweep` on `splits` (default: every test split)."""
    splits = list(splits) if splits is not None else list(self.task.splits)
    unknown = [s for s in splits if s not in self.task.splits]
    if unknown:
      raise errors.RunError(f"unknown split(s) {', '.join(unknown)}; this task has: "
                       f"{', '.join(self.task.splits)}")
    e = evaluation.evaluate(self.task, self.model, self.params, sweep.spec, splits=splits,
                            scoring=scoring or self.task.scorings[0], batch_size=batch_size,
                            seed=seed, n_bootstrap=n_bootstrap, proxy=sweep.proxy,
                            n_fit=sweep.n_fit)
    return Result(e.rows, e.group_rows, e.compilations)


def load_run(run_dir: str) -> Run:
  """A trained run directory (train.py's): its task, the built-in Transformer, its newest
  good checkpoint."""
  task, model_cfg, params = tasks.load_trained(run_dir)
  return Run(task, transformer.TransformerSites(model_cfg), params)
