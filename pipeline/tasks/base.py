"""What a task is (`Task`, the contract the engine and the commands hold it to), the registry
of tasks (`TASKS`, filled by `register`), and how a run's task is built back from its
config.json.

A task module (`dyck.py`, `code.py`) defines its task class and registers it in one line:

  register(TaskKind("copy", CopyTask, CopyConfig, flags=dataclass_flags(CopyConfig)))

From then on `train.py --task=copy` takes its flags, builds its config and trains it,
config.json records it, and `from_run_config` (evaluate.py, the API, every experiment)
builds it back: no list of tasks is kept anywhere else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jax
import numpy as np

from pipeline import errors, rundir
from models import mesh as mesh_lib, training, transformer
from proxies import faithfulness, metrics

Arrays = dict[str, np.ndarray]


class Task(Protocol):
  """Everything the engine (training, fitting, evaluation) and the commands ask of a task.

  A task is a dataset with its splits and its way of scoring a prediction, built from a
  data config (a frozen dataclass with a `seed` field) and a data directory. Sequences are
  token ids [N, L]; position p of `inputs` predicts position p of `targets` / `gold`.
  Subclassing it gives the defaults written here; the rest each task defines."""

  name: str
  """The name it is registered under: config.json's "task", the start of run names."""

  config: Any
  """Its data config (the `TaskKind.config` dataclass): config.json's "data"."""

  data_dir: str
  """Where its datasets are written and read (config.json's "data_dir")."""

  splits: tuple[str, ...]
  """The test splits: what evaluation measures unless asked for fewer."""

  validation: tuple[str, ...] = ()
  """Validation splits: evaluated or fitted on when named (`fit_split`), never by default;
  what training monitors and what checkpoints are chosen on."""

  scorings: tuple[str, ...]
  """The ways of choosing the scored positions it knows; the first is the default."""

  accuracy_note: str = "scored positions"
  """What its accuracy counts, in a few words, for messages ("Murty positions")."""

  pad_id: int
  """The padding token: inputs of this id are no real position, and training takes no
  loss on targets of this id."""

  n_train: int
  """How many training sequences `fit_inputs` can give: the largest `n_fit`."""

  groups: Mapping[str, Sequence[str]]
  """Group name -> its bucket labels: how positions are bucketed in the rows by group
  (e.g. depth, distance). `eval_arrays` holds each group's bucket index per position."""

  strata: Mapping[str, tuple[str, tuple[int, ...]]] = {}
  """Name -> (group, buckets): unions of buckets whose metrics every row also holds,
  suffixed _<name> (e.g. Dyck's closes deeper than the training depth)."""

  in_distribution: str = "iid"
  """The test split drawn as the training strings are: what the illusion scan reads every
  other split's gap against."""

  control_fit_split: str | None = None
  """A split proxies may be fitted on instead of the training strings (a validation split
  out of distribution): the illusion scan's fitting-distribution control. None: no such
  control."""

  breakdown: "Breakdown | None" = None
  """How the illusion scan says where a proxy breaks: by which group, matched on which
  (`Breakdown`); None: it names no bucket."""

  @property
  def data(self) -> Mapping[str, Any]:
    """Every split, made or read on first use (the slow part; the engine reads the data
    only through the members below, so its form is the task's own)."""
    ...

  def run_name(self, seed: int) -> str:
    """The default run directory's name for a model trained with `seed`."""
    return f"{self.name}-s{seed}"

  def model_config(self, **overrides) -> transformer.ModelConfig:
    """The built-in Transformer sized for the task (its vocabulary and positions, and any
    defaults of its own), with `overrides` (train.py's model flags) over it; ValueError
    for values the model cannot take."""
    ...

  def manifest(self) -> dict:
    """A description of its datasets for people (sizes, vocabulary); no engine reads it."""
    return {}

  def train_batches(self, batch_size: int, seed: int) -> Callable[[int], dict]:
    """step -> {'inputs', 'targets'}, int [batch_size, L]: a function of the step alone,
    so a resumed run sees the same batches as one never interrupted."""
    ...

  def monitored(self) -> Mapping[str, Arrays]:
    """Name -> arrays (as `eval_arrays`) whose model accuracy training logs at each
    evaluation; 'iid_accuracy' is one, the accuracy train.py reports. Never a test split
    other than iid: checkpoints are chosen on what is logged."""
    return {"iid_accuracy": self.eval_arrays("iid")}

  def fit_inputs(self, n: int) -> np.ndarray:
    """int [n, L]: the inputs of the first `n` training sequences, what data-fitted
    proxies are fitted on (the same every call)."""
    ...

  def eval_arrays(self, split: str, scoring: str | None = None) -> Arrays:
    """One split (a test or validation split) as arrays, all [N, L]: `inputs`, `gold`
    (the target a prediction is judged against, -1 where none), `scored` (bool, the
    positions `scoring` counts) and one int array per group of `groups` (the bucket of
    each position, -1 in none). The same every call (cache it)."""
    ...

  def clusters(self, split: str) -> np.ndarray | None:
    """[N] ids of the sequences of a split that are not independent of each other (the
    windows of one file), which bootstrap intervals resample together; None when every
    sequence is an independent draw."""
    return None

  def decision(self, scoring: str | None = None) -> metrics.Decision:
    """How a prediction is judged under `scoring` (default: the first of `scorings`)."""
    ...

  def add_split_file(self, name: str, path: str) -> None:
    """Evaluates the sequences of a text file as test split `name` too (evaluate.py
    --split_file); RunError where the name is taken, the file unreadable, or the task
    reads no such files."""
    raise errors.RunError(f"the {self.name} task reads no split files")


@dataclasses.dataclass(frozen=True)
class Breakdown:
  """Where a proxy breaks is read by one group (`group`, e.g. key depth) at equal
  composition of another (`matched_on`, e.g. distance), from the task's group of their
  cells (`cells`), whose bucket is g * n_matched + m when `group_major`, else
  m * n_group + g (g, m: the buckets in `group` and `matched_on`)."""

  group: str
  matched_on: str
  cells: str
  group_major: bool = True

  def grid(self, cells_xC: np.ndarray, groups: Mapping[str, Sequence[str]]) -> np.ndarray:
    """[..., C] -> [..., n_group, n_matched]."""
    n_g, n_m = len(groups[self.group]), len(groups[self.matched_on])
    if self.group_major:
      return cells_xC.reshape(*cells_xC.shape[:-1], n_g, n_m)
    return np.swapaxes(cells_xC.reshape(*cells_xC.shape[:-1], n_m, n_g), -1, -2)


class TaskView(Task):
  """A task seen differently: every member forwarded to `task`, for a subclass to override
  a few (e.g. other groups over the same data). Members are forwarded one by one, so the
  contract it keeps is the one written in `Task`."""

  def __init__(self, task: Task):
    self.task = task

  name = property(lambda self: self.task.name)
  config = property(lambda self: self.task.config)
  data_dir = property(lambda self: self.task.data_dir)
  splits = property(lambda self: self.task.splits)
  validation = property(lambda self: self.task.validation)
  scorings = property(lambda self: self.task.scorings)
  accuracy_note = property(lambda self: self.task.accuracy_note)
  pad_id = property(lambda self: self.task.pad_id)
  n_train = property(lambda self: self.task.n_train)
  groups = property(lambda self: self.task.groups)
  strata = property(lambda self: self.task.strata)
  in_distribution = property(lambda self: self.task.in_distribution)
  control_fit_split = property(lambda self: self.task.control_fit_split)
  breakdown = property(lambda self: self.task.breakdown)
  data = property(lambda self: self.task.data)

  def run_name(self, seed: int) -> str:
    return self.task.run_name(seed)

  def model_config(self, **overrides) -> transformer.ModelConfig:
    return self.task.model_config(**overrides)

  def manifest(self) -> dict:
    return self.task.manifest()

  def train_batches(self, batch_size: int, seed: int) -> Callable[[int], dict]:
    return self.task.train_batches(batch_size, seed)

  def monitored(self) -> Mapping[str, Arrays]:
    return self.task.monitored()

  def fit_inputs(self, n: int) -> np.ndarray:
    return self.task.fit_inputs(n)

  def eval_arrays(self, split: str, scoring: str | None = None) -> Arrays:
    return self.task.eval_arrays(split, *(() if scoring is None else (scoring,)))

  def clusters(self, split: str) -> np.ndarray | None:
    return self.task.clusters(split)

  def decision(self, scoring: str | None = None) -> metrics.Decision:
    return self.task.decision(*(() if scoring is None else (scoring,)))

  def add_split_file(self, name: str, path: str) -> None:
    self.task.add_split_file(name, path)


@dataclasses.dataclass(frozen=True)
class Flag:
  """One train.py flag of a task: `--<name>` sets field `field` of its data config."""

  name: str
  field: str
  type: Callable[[str], Any] = str
  help: str = ""
  repeat: bool = False  # may be given several times; the field gets the tuple of values


def dataclass_flags(cls, skip: Sequence[str] = ("seed",),
                    rename: Mapping[str, str] | None = None) -> tuple[Flag, ...]:
  """A flag per int, float or str field of data config `cls` (`rename`: field -> flag
  name), its help the field's default. `seed` is train.py's --data_seed, so skipped."""
  rename = rename or {}
  types = {"int": int, "float": float, "str": str}
  # A field's type is its annotation's text in a module with postponed annotations.
  type_of = lambda f: types.get(f.type if isinstance(f.type, str) else
                                getattr(f.type, "__name__", None))
  return tuple(Flag(rename.get(f.name, f.name), f.name, type_of(f), f"(default: {f.default})")
               for f in dataclasses.fields(cls) if f.name not in skip and type_of(f))


def _frozen(value):
  """JSON lists back to tuples (frozen configs hold tuples)."""
  return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


@dataclasses.dataclass(frozen=True)
class TaskKind:
  """A registered task: its class, its data config and its command-line flags.

  `make(config, data_dir)` builds the task (usually its class). `config` is its data
  config, a dataclass with a `seed` field whose constructor raises ValueError for values it
  cannot take. `flags`: its train.py flags (`dataclass_flags` gives one per plain field);
  names shared by several tasks are one flag, so a shared name must mean the same type.
  `help`: what a command flag whose meaning is the task's says for it ("scoring": the
  scorings and the default; "split_file": the file format it reads), shown in --help."""

  name: str
  make: Callable[[Any, str], Task]
  config: type
  flags: tuple[Flag, ...] = ()
  help: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def config_from_flags(self, given: Mapping[str, Any], seed: int):
    """Its data config from the flags given (flag name -> value; the others keep the
    config's defaults) and the data seed; RunError for values it cannot take."""
    fields = {f.field: tuple(given[f.name]) if f.repeat else given[f.name]
              for f in self.flags if f.name in given}
    try:
      return self.config(**fields, seed=seed)
    except ValueError as e:
      raise errors.RunError(str(e)) from None

  def config_from_dict(self, data: Mapping[str, Any]):
    """Its data config from config.json's "data" (TypeError/ValueError if malformed)."""
    return self.config(**{k: _frozen(v) for k, v in data.items()})


TASKS: dict[str, TaskKind] = {}


def register(kind: TaskKind) -> TaskKind:
  """Adds a task to the registry, the one list of tasks: train.py's --task and flags,
  config.json and `from_run_config` all read it."""
  for other in TASKS.values():
    for mine in kind.flags:
      for theirs in other.flags:
        if other.name != kind.name and mine.name == theirs.name and (
            mine.type, mine.repeat) != (theirs.type, theirs.repeat):
          raise ValueError(f"task {kind.name}'s flag --{mine.name} has another type than "
                           f"task {other.name}'s")
  TASKS[kind.name] = kind
  return kind


def kind_of(name: str) -> TaskKind:
  """The registered task `name`; RunError naming the registered ones otherwise."""
  errors.check_choice("task", name, list(TASKS))
  return TASKS[name]


def help_for(flag: str) -> str:
  """What each task says for a command flag whose meaning is the task's ('dyck: ...;
  code: ...'), read off the registry."""
  return "; ".join(f"{k.name}: {k.help[flag]}" for k in TASKS.values() if flag in k.help)


def from_config(config, data_dir: str) -> Task:
  """The task of data config `config`: the registered task whose config class it is."""
  for kind in TASKS.values():
    if type(config) is kind.config:
      return kind.make(config, data_dir)
  raise errors.RunError(f"no registered task has a config of type {type(config).__name__}")


def from_run_config(config: dict, run_dir: str):
  """(task, model config, train config) of a run's config.json, its data directory resolved
  against the run's (`rundir.resolve_data_dir`); RunError if malformed."""
  kind = kind_of(config.get("task"))
  try:
    data_dir = rundir.resolve_data_dir(config["data_dir"], run_dir)
    task = kind.make(kind.config_from_dict(config["data"]), data_dir)
    model_cfg = transformer.ModelConfig.from_dict(config["model"])
    train_cfg = training.TrainConfig(**config["train"])
  except (KeyError, TypeError, ValueError) as e:
    raise errors.RunError(f"{run_dir}/config.json is not a valid run config ({e})") from None
  return task, model_cfg, train_cfg


def load_trained(run_dir: str):
  """(task, model config, params) of a trained run: its own configs, its newest good
  checkpoint; RunError if it is not a run or has no checkpoint."""
  task, model_cfg, train_cfg = from_run_config(rundir.read_config(run_dir), run_dir)
  params = training.restore_params(run_dir, model_cfg, train_cfg)
  if params is None:
    raise errors.RunError(f"run {run_dir!r} has no checkpoint; train it first")
  return task, model_cfg, params


def model_accuracy(cfg: transformer.ModelConfig, decision: metrics.Decision, pad_id: int,
                   batch_size: int = 256, mesh=None):
  """A function params, arrays -> accuracy of the model alone on the scored positions,
  batches split over `mesh` (default: every device)."""
  model = transformer.Transformer(cfg)
  mesh = mesh or mesh_lib.data_mesh()
  batch_size = mesh_lib.round_up(batch_size, mesh)
  split = mesh_lib.batch_sharding(mesh)

  def counts(params, inputs_BxL, gold_BxL, scored_BxL):
    correct = decision.correct(model.apply({"params": params}, inputs_BxL), gold_BxL)
    return (correct & scored_BxL).sum(), scored_BxL.sum()

  counts = jax.jit(counts, in_shardings=(mesh_lib.replicated(mesh), split, split, split))

  def accuracy(params, arrays) -> float:
    params = mesh_lib.replicate(mesh, params)
    fill = faithfulness.padding(pad_id)
    totals = np.zeros(2)
    widths = faithfulness.length_ladder(arrays["inputs"].shape[1])  # little padding
    for batch, _ in faithfulness.fixed_batches(arrays, batch_size, fill, widths):
      b = mesh_lib.shard_batch(mesh, batch)
      totals += np.array(mesh_lib.to_host(counts(params, b["inputs"], b["gold"], b["scored"])))
    return float(totals[0] / max(totals[1], 1))

  return accuracy
