"""Fit one proxy sweep on a trained run and measure it on every split, as one config says
(`EvalConfig`, the one set of defaults): the engine behind `pipeline.api`, which
evaluate.py, the experiments and the benchmarks go through.

Rows are plain dicts: one per split x sweep setting (metrics with bootstrap intervals), and
one per split x setting x group bucket (metrics by depth, by distance).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import jax
import numpy as np
import tqdm

import proxies
from pipeline import confidence, errors, rundir
from models import mesh as mesh_lib
from proxies import faithfulness

N_FIT = 1000  # training strings data-fitted proxies are fitted on (all, if fewer)
STRATUM_METRICS = ("accuracy_model", "accuracy_proxy", "agreement", "n")  # per task stratum


class CompileCounter:
  """Counts XLA compilations while active (jax.monitoring's backend-compile event). One
  instance per process (`compile_counter()`): jax.monitoring cannot unregister a listener,
  so one per evaluation would leave a listener behind for every call."""

  def __init__(self):
    self.count, self.active = 0, False
    jax.monitoring.register_event_duration_secs_listener(self._on_event)

  def _on_event(self, event: str, duration: float, **kwargs) -> None:
    if self.active and event == "/jax/core/compile/backend_compile_duration":
      self.count += 1


@functools.cache
def compile_counter() -> CompileCounter:
  return CompileCounter()


def fitting_inputs(task, n_fit: int, fit_split: str | None = None):
  """The sequences data-fitted proxies are fitted on: the first `n_fit` training strings,
  or (`fit_split`, the fitting-distribution control) the first `n_fit` of that split."""
  if fit_split is None:
    return task.fit_inputs(n_fit)
  return task.eval_arrays(check_fit_split(task, fit_split))["inputs"][:n_fit]


def check_fit_split(task, fit_split: str) -> str:
  """`fit_split`, a test or validation split of the task (a RunError otherwise)."""
  errors.check_choice("fit_split", fit_split, (*task.splits, *getattr(task, "validation", ())))
  return fit_split


def fit_strings(task, n_fit: int, fit_split: str | None) -> int:
  """The strings a fit on `fit_split` can have when `n_fit` training strings are asked for:
  `n_fit`, or all the split has if fewer (a validation split is smaller than training)."""
  if fit_split is None:
    return n_fit
  return min(n_fit, len(task.eval_arrays(check_fit_split(task, fit_split))["inputs"]))


def n_fit_of(task, n_fit: int | None, fit_split: str | None = None) -> int:
  """The number of strings a fit will really use: `n_fit` checked against what there is
  (the training split, or `fit_split`'s strings); None: N_FIT, or all if fewer. Rows say
  this number, so it may not exceed the strings there are."""
  if fit_split is None:
    available, where = task.n_train, "the training split's size"
  else:
    available = len(task.eval_arrays(check_fit_split(task, fit_split))["inputs"])
    where = f"{fit_split}'s size"
  n_fit = n_fit if n_fit is not None else min(N_FIT, available)
  errors.check_range("n_fit", n_fit, 1, available, f" ({where})")
  return n_fit


def fitting_vectors(task, n_fit: int, fit_split: str | None = None) -> int:
  """How many vectors a data-fitted proxy is fitted on at each site: one per non-PAD
  position of its fitting strings (`fitting_inputs`); a kind's bounds read it."""
  return int((fitting_inputs(task, n_fit, fit_split) != task.pad_id).sum())


def fit_proxy(task, model, params, spec: proxies.ProxySpec, n_fit: int,
              mesh=None, fit_split: str | None = None) -> proxies.Proxy:
  """Fits `spec` at each of its heads on what its kind needs: the head's vectors on the
  first `n_fit` training strings (or of `fit_split`), the head's weights, or nothing;
  `proxies.check`ed against the model (and the fitting vectors) first. `model`: a
  `sites.SiteModel` or the `ModelConfig` of the built-in Transformer."""
  model = faithfulness.site_model(model)
  kind = proxies.KINDS[spec.kind]
  if kind.fits_on == "weights":
    proxies.check(spec, model)
    fit_inputs = [mesh_lib.to_host(model.head_weights(params, l, h)) for l, h in spec.heads]
  elif kind.fits_on == "activations":
    inputs = fitting_inputs(task, n_fit, fit_split)
    proxies.check(spec, model, int((inputs != task.pad_id).sum()))
    fit_inputs = faithfulness.collect_activations(
        model, params, inputs, task.pad_id, spec.heads, spec.sites, mesh=mesh)
  else:
    proxies.check(spec, model)
    fit_inputs = [{} for _ in spec.heads]
  return proxies.fit(spec, fit_inputs)


_PROGRAMS: dict[tuple, faithfulness.FaithfulnessProgram] = {}


def program_for(model, decision, pad_id: int, groups: tuple[tuple[str, int], ...],
                mesh=None, sequence_groups: tuple[str, ...] = ()
                ) -> faithfulness.FaithfulnessProgram:
  """One faithfulness program per (model, decision, groups, mesh, groups kept per string),
  kept for the process:
  a second evaluation of the same shapes, of any sweep of the same proxy structure,
  compiles nothing. (A model that cannot be hashed gets a new program each time.)"""
  make = lambda: faithfulness.FaithfulnessProgram(model, decision, pad_id, dict(groups), mesh,
                                                  sequence_groups=sequence_groups)
  key = (model, decision, pad_id, groups, mesh, sequence_groups)
  try:
    program = _PROGRAMS.get(key)
  except TypeError:  # a model that cannot be hashed
    return make()
  if program is None:
    program = _PROGRAMS[key] = make()
  return program


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """What one evaluation measures: a proxy sweep on some splits, and how. These defaults
  are the only ones: the API and the command line apply their overrides to them, and
  `resolve` fills in what depends on the task."""

  spec: proxies.ProxySpec
  splits: tuple[str, ...] = ()  # () every test split of the task
  scoring: str | None = None  # None: the task's first
  n_fit: int | None = None  # training strings the proxy is fitted on; None: N_FIT, or all
  batch_size: int = 256
  seed: int = 0  # of the bootstrap (a kind's own seed is an option of its spec)
  n_bootstrap: int = 1000
  fit_split: str | None = None  # fit on this split's strings instead (a control); last, for
  # callers that give the fields in order


SETTINGS = tuple(f.name for f in dataclasses.fields(EvalConfig) if f.name != "spec")


def resolve(config: EvalConfig, task, model) -> EvalConfig:
  """`config` with the task's defaults filled in and every setting checked against the
  task, its spec against the model (`proxies.check`): a RunError or ProxyError before
  anything runs. A resolved config resolves to itself."""
  proxies.check(config.spec, faithfulness.site_model(model))
  splits = tuple(config.splits) or tuple(task.splits)
  for split in splits:
    errors.check_choice("split", split, task.splits)
  scoring = config.scoring or task.scorings[0]
  errors.check_choice("scoring", scoring, task.scorings)
  n_fit = n_fit_of(task, config.n_fit, config.fit_split)
  errors.check_range("batch_size", config.batch_size, 1, 1 << 16)
  if config.batch_size % jax.device_count():
    raise errors.RunError(f"batch_size={config.batch_size} must be a multiple of the "
                          f"{jax.device_count()} devices")
  errors.check_range("seed", config.seed, 0, 2**32 - 1)
  errors.check_range("n_bootstrap", config.n_bootstrap, 1, 100_000)
  return dataclasses.replace(config, splits=splits, scoring=scoring, n_fit=n_fit)


@dataclasses.dataclass
class Evaluation:
  rows: list[dict]  # split x setting
  group_rows: list[dict]  # split x setting x group bucket
  compilations: int  # of the faithfulness program, over every split
  settings: int
  shapes: int  # batch shapes run (length buckets x read-out slot counts): one compilation
  # each the first time a process runs them
  # split -> its sums (per string, per bucket): what the rows were made from
  results: dict[str, faithfulness.SplitResult] = dataclasses.field(default_factory=dict)


def evaluate(task, model, params, config: EvalConfig, proxy: proxies.Proxy | None = None,
             mesh=None, sequence_groups: Sequence[str] = ()) -> Evaluation:
  """What `config` says (`resolve`d first): fits its spec (unless `proxy` is its fit
  already) and evaluates it on its splits, batches split over `mesh` (default: every
  device). Every process gets the same rows. `model`: a `sites.SiteModel` or the
  `ModelConfig` of the built-in Transformer. `sequence_groups`: groups whose sums are kept
  per string too, in `Evaluation.results` (what intervals by bucket need)."""
  model = faithfulness.site_model(model)
  config = resolve(config, task, model)
  spec, splits, scoring, n_fit = config.spec, config.splits, config.scoring, config.n_fit
  batch_size, fit_split = config.batch_size, config.fit_split
  with progress(spec, splits) as bar:
    if proxy is None:
      proxy = fit_proxy(task, model, params, spec, n_fit, mesh, fit_split)
    bar.update()
    # The model's confidence is a group of every task: agreement at equal confidence.
    groups = {**task.groups, confidence.GROUP: confidence.LABELS}
    decision = task.decision(scoring)
    program = program_for(model, decision, task.pad_id,
                          tuple((g, len(labels)) for g, labels in groups.items()), mesh,
                          tuple(sequence_groups))
    program.shapes.clear()  # count the shapes this evaluation runs
    counter = compile_counter()
    counter.count = 0
    rows, group_rows, split_results = [], [], {}
    for split in splits:
      bar.set_postfix_str(split)
      arrays = dict(task.eval_arrays(split, scoring))
      arrays[confidence.GROUP] = confidence.buckets(confidence.margins(
          model, params, arrays, decision, task.pad_id, batch_size, mesh))
      counter.active = True
      result = split_results[split] = faithfulness.evaluate(program, params, proxy, arrays,
                                                            batch_size, task.pad_id)
      counter.active = False
      labels = [{"split": split, **label} for label in spec.labels()]
      strata = [{} for _ in labels]  # per sweep entry: metrics of each stratum, suffixed
      for name, (group, buckets) in task.strata.items():
        for entry, metrics in zip(strata, result.stratum(group, buckets)):
          entry.update({f"{m}_{name}": metrics[m] for m in STRATUM_METRICS})
      # Code windows of one file are not independent: the task names each one's cluster.
      intervals = result.bootstrap(config.n_bootstrap, config.seed,
                                   clusters=task.clusters(split))
      diagnostics = diagnose(model, params, proxy, arrays["inputs"], task.pad_id, mesh)
      for label, summary, interval, stratum, diagnosed in zip(
          labels, result.summary(), intervals, strata, diagnostics):
        rows.append({**label, **summary, **stratum, **interval, **diagnosed, "scoring": scoring,
                     "n_fit": n_fit, "fit_split": fit_split or "train"})
      for group, bucket_labels in groups.items():
        for label, buckets in zip(labels, result.by_group(group)):
          group_rows += [{**label, "group": group, "bucket": bucket_labels[b], **buckets[b]}
                         for b in range(len(bucket_labels))
                         if buckets[b]["n"] or buckets[b]["attention_jsd"] is not None]
      bar.update()
  return Evaluation(rows, group_rows, counter.count, proxy.size, len(program.shapes),
                    split_results)


def diagnose(model, params, proxy: proxies.Proxy, inputs_NxL, pad_id: int, mesh=None
             ) -> list[dict]:
  """Per setting, the kind's reconstruction diagnostics (`ProxyKind.diagnose`) on the
  vectors of these sequences at the proxy's sites, averaged over its heads and sites;
  empty dicts for a kind without them."""
  kind = proxies.KINDS[proxy.kind]
  if kind.diagnose is None:
    return [{} for _ in range(proxy.size)]
  vectors = faithfulness.collect_activations(model, params, inputs_NxL, pad_id, proxy.heads,
                                             proxy.sites, mesh=mesh)
  found = [kind.diagnose(mesh_lib.to_host(arrays), site, per_head[str(site)])
           for arrays, per_head in zip(proxy.arrays, vectors) for site in proxy.sites]
  return [{name: float(np.mean([d[name][p] for d in found])) for name in found[0]}
          for p in range(proxy.size)]


def progress(spec: proxies.ProxySpec, splits: Sequence[str]) -> tqdm.tqdm:
  """A bar stepping through the fit and each split (on a CPU each can take a minute): on
  process 0 and on a terminal only (tqdm's `disable=None`), so logs and tests stay clean."""
  fits_on = proxies.KINDS[spec.kind].fits_on
  bar = tqdm.tqdm(total=1 + len(splits), desc=f"{spec.kind} layer {spec.layer}",
                  unit=" step", disable=None if mesh_lib.is_main() else True, leave=False)
  bar.set_postfix_str("fitting" if fits_on != "nothing" else "")
  return bar


def file_stem(spec: proxies.ProxySpec, fit_split: str | None = None) -> str:
  """A name that tells sweeps apart: kind, layer, head, sites, values, non-default options,
  and the split fitted on when it is not the training set."""
  defaults = proxies.KINDS[spec.kind].options
  parts = [spec.kind, f"layer{spec.layer}", f"head{spec.head}", "+".join(spec.sites)]
  if spec.values:
    parts.append("-".join(str(v) for v in spec.values))
  for name, value in spec.options:
    if value is True:
      parts.append(name)
    elif not isinstance(value, bool) and value != defaults.get(name):
      parts.append(f"{name}{value}")
  if fit_split is not None:
    parts.append(f"fit-{fit_split}")
  return "_".join(parts)


def write(evaluation: Evaluation, eval_dir: str, stem: str) -> list[str]:
  """Writes <stem>.json/.csv (rows) and <stem>_by_group.json/.csv; returns the paths."""
  paths = []
  for suffix, rows in (("", evaluation.rows), ("_by_group", evaluation.group_rows)):
    for ext, writer in ((".json", rundir.write_json), (".csv", rundir.write_csv)):
      paths.append(os.path.join(eval_dir, f"{stem}{suffix}{ext}"))
      writer(paths[-1], rows)
  return paths
