"""The Python API: the engine behind evaluate.py, for notebooks and scripts.

  from pipeline.api import load_run
  run = load_run("runs/dyck-k20-m10-s0")
  sweep = run.fit("svd", [1, 2, 4, 8], heads=[(0, 0), (1, 0)])   # both layers' heads at once
  result = run.evaluate(sweep, splits=["iid", "unseen_depth"])   # or n_bootstrap=..., ...
  result.rows             # plain dicts, one per split x setting (as evaluate.py writes them)
  result.by("depth")      # one per split x setting x depth bucket
  sweep.save("svd_both")  # svd_both.json + svd_both.npz; Sweep.load("svd_both") reads it

Every request is checked before anything runs: a sweep against the model and its kind's
limits (`proxies.make_spec`), the settings against the task (`evaluation.resolve`, over the
one set of defaults, `evaluation.EvalConfig`). Bad requests raise domain errors
(`proxies.ProxyError`, `pipeline.errors.RunError`, both ValueErrors) and never exit the
process; evaluate.py is this API behind flags (`plan`, then `Run.run`).

A `Run` is a task (its data and splits), a model seen through the site interface
(`models.sites.SiteModel`: the built-in Transformer, or any Flax Linen model through
`models.sites.LinenSites`) and its parameters. Evaluations share one compiled program per
(model, scoring), so a second `evaluate` of the same shapes compiles nothing
(`result.compilations`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import proxies
from pipeline import errors, evaluation, scan as scan_lib, tasks
from models import transformer
from models.sites import SiteModel
from proxies import faithfulness


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A fitted proxy sweep: what was asked (`spec`) and the fitted arrays (`proxy`)."""

  spec: proxies.ProxySpec
  proxy: proxies.Proxy
  n_fit: int | None = None  # strings fitted on (None: no data)
  fit_split: str | None = None  # the split they came from, when not the training split

  @property
  def labels(self) -> list[dict]:
    return self.spec.labels()

  def save(self, path: str) -> tuple[str, str]:
    """Writes <path>.json (the spec) and <path>.npz (the arrays); no pickle."""
    return proxies.save(path, self.spec, self.proxy,
                        {"n_fit": self.n_fit, "fit_split": self.fit_split})

  @classmethod
  def load(cls, path: str) -> "Sweep":
    spec, proxy, info = proxies.load(path)
    return cls(spec, proxy, info.get("n_fit"), info.get("fit_split"))


@dataclasses.dataclass(frozen=True)
class Result:
  rows: list[dict]  # split x setting
  group_rows: list[dict]  # split x setting x bucket of each group
  compilations: int  # XLA compilations this evaluation made
  settings: int = 1  # of the sweep
  shapes: int = 0  # batch shapes run (length buckets x read-out slot counts)

  @classmethod
  def of(cls, e: evaluation.Evaluation) -> "Result":
    return cls(e.rows, e.group_rows, e.compilations, e.settings, e.shapes)

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
          n_fit: int | None = None, fit_split: str | None = None, **options) -> Sweep:
    """Fits a sweep of `kind` (svd, kmeans, onehot, weight_svd, sae, or any registered kind)
    at each of `heads` (default: head 0 of the last layer) on `sites` (default: the
    kind's), on the first `n_fit` training strings (default: 1000, or all if fewer) or, with
    `fit_split`, of that split (a test or validation split: the fitting-distribution
    control). `values`: the sweep (ranks, K, ...; default: the kind's); `options`: the
    kind's options (e.g. separate=True)."""
    config = plan(self.task, self.model, kind, values, heads=heads, sites=sites,
                  options=options, n_fit=n_fit, fit_split=fit_split)
    return self.fit_spec(config.spec, n_fit=config.n_fit, fit_split=fit_split)

  def fit_spec(self, spec: proxies.ProxySpec, *, n_fit: int | None = None,
               fit_split: str | None = None) -> Sweep:
    """`fit` of a spec already made (`proxies.make_spec`, or read back from a file)."""
    config = evaluation.resolve(evaluation.EvalConfig(spec, n_fit=n_fit, fit_split=fit_split),
                                self.task, self.model)
    fitted = evaluation.fit_proxy(self.task, self.model, self.params, spec, config.n_fit,
                                  fit_split=fit_split)
    data = proxies.KINDS[spec.kind].fits_on == "activations"
    return Sweep(spec, fitted, config.n_fit if data else None, fit_split if data else None)

  def evaluate(self, sweep: Sweep, splits: Sequence[str] | None = None,
               **settings) -> Result:
    """The model and every setting of `sweep` on `splits` (default: every test split).
    `settings`: any of `evaluation.EvalConfig`'s (scoring, batch_size, seed, n_bootstrap)
    over its defaults."""
    config = configure(sweep.spec, splits, n_fit=sweep.n_fit, fit_split=sweep.fit_split,
                       **settings)
    return Result.of(evaluation.evaluate(self.task, self.model, self.params, config,
                                         proxy=sweep.proxy))

  def scan(self, config: scan_lib.ScanConfig | None = None, *, out_dir: str | None = None,
           log=print) -> scan_lib.Scan:
    """The illusion scan of this model (`pipeline.scan`): every proxy family at every head
    (or `config.heads`) on every split, beside its controls; its areas, gaps and flags.
    With `out_dir`, each evaluation is saved there and read back by a rerun."""
    return scan_lib.run(self.task, self.model, self.params, config or scan_lib.ScanConfig(),
                        out_dir, log)

  def run(self, config: evaluation.EvalConfig) -> Result:
    """Fits and evaluates what `plan` made: evaluate.py's whole job, in one call."""
    sweep = self.fit_spec(config.spec, n_fit=config.n_fit, fit_split=config.fit_split)
    return Result.of(evaluation.evaluate(self.task, self.model, self.params, config,
                                         proxy=sweep.proxy))


def configure(spec: proxies.ProxySpec, splits: Sequence[str] | None = None,
              **settings) -> evaluation.EvalConfig:
  """An `evaluation.EvalConfig` of `spec`: its defaults, `settings` over them."""
  unknown = set(settings) - set(evaluation.SETTINGS)
  if unknown:
    raise errors.RunError(f"no setting {', '.join(sorted(unknown))}; the settings: "
                          f"{', '.join(s for s in evaluation.SETTINGS if s != 'splits')}")
  settings = {k: v for k, v in settings.items() if v is not None}
  return evaluation.EvalConfig(spec, tuple(splits or ()), **settings)


def plan(task, model, kind: str, values: Iterable[int] = (), *,
         heads: Sequence[tuple[int, int]] | None = None, sites: Sequence[str] | None = None,
         options: Mapping[str, Any] | None = None, splits: Sequence[str] | None = None,
         **settings) -> evaluation.EvalConfig:
  """Everything a fit and evaluation of `kind` will ask, checked before anything runs (no
  parameters needed): the sweep by `proxies.make_spec` (the kind's limits against the
  model's widths and the fitting vectors) and the settings by `evaluation.resolve`.
  Returns the resolved config; `Run.run` fits and evaluates it."""
  model = faithfulness.site_model(model)
  config = configure(proxies.make_spec(model, kind, values, heads=heads, sites=sites,
                                       options=options), splits, **settings)
  config = evaluation.resolve(config, task, model)
  if proxies.KINDS[kind].fits_on == "activations":  # K within the vectors, ...
    proxies.check(config.spec, model,
                  evaluation.fitting_vectors(task, config.n_fit, config.fit_split))
  return config


def load_run(run_dir: str) -> Run:
  """A trained run directory (train.py's): its task, the built-in Transformer, its newest
  good checkpoint."""
  task, model_cfg, params = tasks.load_trained(run_dir)
  return Run(task, transformer.TransformerSites(model_cfg), params)
