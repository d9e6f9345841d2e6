"""The task registry is the only list of tasks: a third task, registered here in one line,
trains with train.py, is evaluated by evaluate.py and through `pipeline.api`, and is built
back from its run's config.json, with no other list edited."""

import dataclasses
import functools
import json

import numpy as np
import pytest

import evaluate
import train
from data import code
from experiments import cli
from pipeline import api, errors, tasks
from pipeline.tasks import base
from models import transformer
from proxies import metrics
from tests import tiny


@dataclasses.dataclass(frozen=True)
class CopyConfig:
  n_symbols: int = 6
  length: int = 5  # symbols per training string
  ood_length: int = 7  # symbols per string of the `longer` split
  n_train: int = 2000
  n_test: int = 64
  seed: int = 0

  def __post_init__(self):
    if not 1 <= self.length < self.ood_length <= 32:
      raise ValueError(f"need 1 <= length < ood_length <= 32, got {self.length}, "
                       f"{self.ood_length}")


class CopyTask(tasks.Task):
  """s SEP s: after the separator the model copies the string; trained on strings of one
  length, tested on them (iid) and on longer ones (longer). Group `offset`: the index of
  the symbol being copied; stratum `beyond`: offsets past the training length."""

  name = "copy"
  splits = ("iid", "longer")
  scorings = ("copy",)

  def __init__(self, config: CopyConfig, data_dir: str):
    self.config, self.data_dir = config, data_dir
    self.sep, self.pad_id = config.n_symbols, config.n_symbols + 1
    self.n_train = config.n_train
    self.groups = {"offset": [str(i) for i in range(config.ood_length)]}
    self.strata = {"beyond": ("offset", tuple(range(config.length, config.ood_length)))}

  def model_config(self, **overrides) -> transformer.ModelConfig:
    return transformer.ModelConfig(vocab_size=self.pad_id + 1,
                                   seq_len=2 * self.config.ood_length, **overrides)

  @functools.cached_property
  def data(self) -> dict[str, np.ndarray]:
    c = self.config
    rng = np.random.default_rng(c.seed)
    return {"train": rng.integers(0, c.n_symbols, (c.n_train, c.length)),
            "iid": rng.integers(0, c.n_symbols, (c.n_test, c.length)),
            "longer": rng.integers(0, c.n_symbols, (c.n_test, c.ood_length))}

  def _encode(self, strings_NxS: np.ndarray) -> dict[str, np.ndarray]:
    """inputs, targets (PAD before the separator: no loss there), offset, [N, L]."""
    n, s = strings_NxS.shape
    width = 2 * self.config.ood_length
    tokens = np.full((n, width + 1), self.pad_id, np.int32)
    tokens[:, :s], tokens[:, s], tokens[:, s + 1:2 * s + 1] = strings_NxS, self.sep, strings_NxS
    offset_L = np.arange(width) - s
    copying_L = (offset_L >= 0) & (offset_L < s)
    targets = np.where(copying_L, tokens[:, 1:], self.pad_id).astype(np.int32)
    offset = np.broadcast_to(np.where(copying_L, offset_L, -1).astype(np.int32), (n, width))
    return {"inputs": tokens[:, :-1], "targets": targets, "offset": offset.copy()}

  def train_batches(self, batch_size: int, seed: int):
    encoded = self._encode(self.data["train"])

    def batch(step: int) -> dict[str, np.ndarray]:
      rows = np.random.default_rng([seed, step]).integers(0, self.n_train, batch_size)
      return {"inputs": encoded["inputs"][rows], "targets": encoded["targets"][rows]}

    return batch

  def fit_inputs(self, n: int) -> np.ndarray:
    return self._encode(self.data["train"][:n])["inputs"]

  @functools.cache
  def eval_arrays(self, split: str, scoring: str = "copy") -> dict[str, np.ndarray]:
    a = self._encode(self.data[split])
    scored = a["targets"] != self.pad_id
    return {"inputs": a["inputs"], "gold": np.where(scored, a["targets"], -1),
            "scored": scored, "offset": a["offset"]}

  def decision(self, scoring: str = "copy") -> metrics.Decision:
    return metrics.Decision(0, self.config.n_symbols)


@pytest.fixture
def copy_task(monkeypatch):
  """The copy task, registered for one test and gone after it."""
  monkeypatch.setattr(base, "TASKS", dict(base.TASKS))
  monkeypatch.setattr(tasks, "TASKS", base.TASKS)
  kind = tasks.register(tasks.TaskKind("copy", CopyTask, CopyConfig,
                                       flags=tasks.dataclass_flags(CopyConfig)))
  assert list(tasks.TASKS) == ["dyck", "code", "copy"]
  return kind


def test_the_task_contract_is_what_the_built_in_tasks_define(tmp_path):
  """Every member the `Task` protocol declares is one the built-in tasks have (their own
  or the protocol's default), and one `TaskView` forwards."""
  declared = {n for n in vars(tasks.Task) if not n.startswith("_")}
  declared |= set(tasks.Task.__annotations__)
  assert {"name", "config", "data_dir", "splits", "validation", "scorings", "accuracy_note",
          "pad_id", "n_train", "groups", "strata", "data", "run_name", "model_config",
          "manifest", "train_batches", "monitored", "fit_inputs", "eval_arrays", "clusters",
          "decision", "add_split_file", "in_distribution", "control_fit_split",
          "breakdown"} == declared
  assert declared <= set(vars(tasks.TaskView))
  dyck_task = tasks.DyckTask(tiny.DATA, str(tmp_path))
  assert all(hasattr(dyck_task, n) for n in declared - {"data"})  # data would make it
  code_task = tasks.CodeTask(code.CodeConfig(), str(tmp_path))
  assert all(hasattr(tasks.CodeTask, n) or n in vars(code_task) for n in declared)


def test_a_task_flag_of_another_task_and_an_unknown_task_are_usage_errors(tmp_path):
  with pytest.raises(cli.UsageError, match="--depth does not apply to task code; it "
                     "applies to: dyck"):
    train.main(["--task=code", "--depth=3", f"--workdir={tmp_path}"])
  with pytest.raises(errors.RunError, match="unknown task 'nope'; choose one of: dyck, code"):
    tasks.kind_of("nope")
  with pytest.raises(errors.RunError, match="no registered task has a config of type"):
    tasks.from_config(CopyConfig(), str(tmp_path))


@pytest.mark.slow  # trains a tiny model for a few hundred steps, then evaluates it twice
def test_a_registered_task_goes_through_train_py_evaluate_py_and_the_api(copy_task, tmp_path,
                                                                        capsys):
  run_dir = tmp_path / "copy-run"
  train.main(["--task=copy", "--n_train=1000", "--data_seed=3", f"--workdir={run_dir}",
              f"--data_dir={tmp_path / 'data'}", "--d_model=32", "--d_head=16", "--d_mlp=64",
              "--steps=300", "--warmup_steps=20", "--batch_size=32", "--log_every=100",
              "--eval_every=100", "--checkpoint_every=100"])
  assert "(scored positions)" in capsys.readouterr().out
  config = json.loads((run_dir / "config.json").read_text())
  assert config["task"] == "copy" and config["data"]["n_train"] == 1000
  assert config["data"]["seed"] == 3
  task, model_cfg, _ = tasks.from_run_config(config, str(run_dir))
  assert isinstance(task, CopyTask) and task.config == CopyConfig(n_train=1000, seed=3)
  assert model_cfg.vocab_size == 8 and model_cfg.seq_len == 14
  # Another task's flag, and a split file, which this task does not read.
  with pytest.raises(cli.UsageError, match="--types does not apply to task copy"):
    train.main(["--task=copy", "--types=3", f"--workdir={run_dir}"])
  with pytest.raises(errors.RunError, match="the copy task reads no split files"):
    evaluate.main([f"--run={run_dir}", f"--split_file=x={tmp_path / 'x.txt'}"])

  evaluate.main([f"--run={run_dir}", "--task=copy", "--proxy=svd", "--rank=1,16",
                 "--n_bootstrap=20", "--batch_size=32"])
  out = capsys.readouterr().out
  assert "iid " in out and "longer " in out
  rows = json.loads((run_dir / "eval" / "svd_layer1_head0_q+k_1-16.json").read_text())
  assert [(r["split"], r["rank"]) for r in rows] == [("iid", 1), ("iid", 16), ("longer", 1),
                                                     ("longer", 16)]
  full = [r for r in rows if r["rank"] == 16]  # rank d_head: the model itself
  assert all(r["agreement"] > 0.99 for r in full)
  # The task's stratum is a column of every row, counted on the longer split only.
  assert rows[0]["n_beyond"] == 0 and rows[2]["n_beyond"] == 64 * 2
  assert rows[0]["n"] == 64 * 5 and rows[2]["n"] == 64 * 7
  groups = json.loads(
      (run_dir / "eval" / "svd_layer1_head0_q+k_1-16_by_group.json").read_text())
  assert {g["bucket"] for g in groups if g["group"] == "offset"} == {str(i) for i in range(7)}

  run = api.load_run(str(run_dir))
  assert run.task.name == "copy"
  sweep = run.fit("kmeans", [2, 8], n_fit=200)
  result = run.evaluate(sweep, splits=["iid"], n_bootstrap=10)
  assert [r["k"] for r in result.rows] == [2, 8]
  # The model learnt to copy what it was trained on (chance: 1 / 6).
  assert result.rows[0]["accuracy_model"] > 0.5
  assert len(result.by("offset")) == 2 * 5
