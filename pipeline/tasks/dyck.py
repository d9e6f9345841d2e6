"""The Dyck-(k, m) task: bracket strings, a split per generalization question
(data/dyck_splits.py), scored at closing brackets, grouped by depth, distance, length and
place."""

from __future__ import annotations

import functools

import numpy as np

from data import dyck, dyck_batch, dyck_splits, dyck_tfds
from pipeline import errors
from pipeline.tasks import base
from models import mesh as mesh_lib, transformer
from proxies import metrics

DISTANCE_EDGES = dyck.DISTANCE_EDGES
POSITION_EDGES = (0, 16, 32, 48, 64, 80, 96, 112)  # where a target is in its string


def _bin_labels(edges) -> list[str]:
  return [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])] + [f"{edges[-1]}+"]


def _span_depth(targets_NxL: np.ndarray, distance_NxL: np.ndarray, n_types: int) -> np.ndarray:
  """int[N, L]: at each close, the deepest stack depth between its open and itself (at
  least its key depth); -1 elsewhere."""
  step = np.where(targets_NxL < n_types, 1, np.where(targets_NxL < 2 * n_types, -1, 0))
  depth_after_NxL = np.cumsum(step, axis=1)
  out = np.full(targets_NxL.shape, -1, np.int32)
  for row, col in zip(*np.nonzero(distance_NxL > 0)):
    out[row, col] = depth_after_NxL[row, col - distance_NxL[row, col]:col].max()
  return out


class DyckTask(base.Task):
  """Dyck-(k, m): next-bracket prediction, judged at closing brackets (`scorings`), on the
  test splits of data/dyck_splits.py; `val_iid` and `val_depth` validate."""

  name = "dyck"
  splits = dyck_splits.TEST_SPLITS

  def __init__(self, config: dyck_splits.DyckConfig, data_dir: str):
    self.config = config
    self.data_dir = data_dir
    self.vocab = dyck.Vocab(config.n_types)
    self.seq_len = config.max_length + 2  # START + brackets, predicting every bracket and END
    self.files: dict[str, list[np.ndarray]] = {}  # splits read from text files

  def add_split_file(self, name: str, path: str) -> None:
    """Evaluates the strings of a Murty/Yao text file as split `name` too (an OOD set made
    elsewhere); RunError if the name is taken or the file is not such strings."""
    if name in self.splits or not name.replace("_", "").isalnum():
      raise errors.RunError(f"--split_file name {name!r} must be new and made of letters, "
                           f"digits and _ (taken: {', '.join(self.splits)})")
    try:
      self.files[name] = dyck.read_split(path, self.vocab, self.config.max_length)
    except ValueError as e:
      raise errors.RunError(str(e)) from None
    self.splits = (*self.splits, name)

  @property
  def pad_id(self) -> int:
    return self.vocab.pad

  scorings = dyck_batch.SCORINGS
  accuracy_note = "Murty positions"

  @property
  def n_train(self) -> int:
    return self.config.n_train

  def run_name(self, seed: int) -> str:
    return f"{self.name}-k{self.config.n_types}-m{self.config.max_depth}-s{seed}"

  def model_config(self, **overrides) -> transformer.ModelConfig:
    return transformer.ModelConfig(vocab_size=self.vocab.size, seq_len=self.seq_len,
                                   **overrides)

  @functools.cached_property
  def data(self) -> dict[str, list[np.ndarray]]:
    """Every split, generated on first use. In a multi-process job process 0 generates
    and the others wait for it, then read."""
    try:
      return mesh_lib.main_first("dyck-data",
                                 lambda: dyck_tfds.load(self.config, self.data_dir))
    except dyck_splits.SplitError as e:  # the user's config asks for a split that cannot be made
      raise errors.RunError(str(e)) from None

  def manifest(self) -> dict:
    return dyck_tfds.manifest(self.config, self.data_dir)

  def train_batches(self, batch_size: int, seed: int) -> dyck_batch.LengthBucketSampler:
    return dyck_batch.LengthBucketSampler(self.data["train"], self.vocab, self.seq_len,
                                          batch_size, seed)

  def fit_inputs(self, n: int) -> np.ndarray:
    """Inputs of the first `n` training strings: what proxies are fitted on."""
    return dyck_batch.encode(self.data["train"][:n], self.vocab, self.seq_len).inputs

  @functools.cached_property
  def groups(self) -> dict[str, list[str]]:
    """Group name -> bucket labels. depth: the stack depth when the target is predicted
    (at a close, the depth of the open it matches, i.e. of the key the head must find);
    distance: how far back that open is; span_depth: the deepest the stack goes between
    the open and its close; length: the string's length in brackets; position: where in
    the string the target is. Depth goes with distance and length (a deep close is
    usually far from its open, in a long string), so a gap by one of them alone can be
    another's: depth_distance and depth_distance_length hold the cells that matched gaps
    compare within ('<depth> / <distance>[ / <length>]')."""
    depths = [str(d) for d in range(max(self.config.max_depth, self.config.ood_depth_cap) + 1)]
    distances = dyck.distance_labels()
    lengths = _bin_labels(dyck_splits.LENGTH_EDGES)
    return {"depth": depths, "distance": distances, "span_depth": depths, "length": lengths,
            "position": _bin_labels(POSITION_EDGES),
            "depth_distance": [f"{d} / {x}" for d in depths for x in distances],
            "depth_distance_length": [f"{d} / {x} / {n}" for d in depths for x in distances
                                      for n in lengths]}

  @functools.cached_property
  def strata(self) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Unions of buckets reported beside the pooled metrics of every split: name ->
    (group, buckets). Pooled numbers of a split mostly count shallow closes, whatever its
    name, so the depth-generalization number is its own column.
      shallow - closes at key depth 1..m-1: the depths at which training strings score a
                close (a depth-m open closes at once, never 10 tokens later); the
                in-distribution reference;
      deep    - closes at key depth > m: depth generalization."""
    m = self.config.max_depth
    return {"shallow": ("depth", tuple(range(1, m))),
            "deep": ("depth", tuple(range(m + 1, len(self.groups["depth"]))))}

  @functools.cache
  def eval_arrays(self, split: str, scoring: str = "murty") -> dict[str, np.ndarray]:
    """inputs, gold, scored, and one bucket index per group (-1: in no bucket), all [N, L]."""
    strings = self.files[split] if split in self.files else self.data[split]
    b = dyck_batch.encode(strings, self.vocab, self.seq_len)
    distance = np.searchsorted(DISTANCE_EDGES, b.distance, side="right").astype(np.int32) - 1
    n_distances, n_lengths = len(DISTANCE_EDGES), len(dyck_splits.LENGTH_EDGES)
    depth_distance = np.where(distance >= 0, b.depth * n_distances + distance, -1)
    length_N = dyck_splits.length_bin([len(s) for s in strings]).astype(np.int32)
    length_NxL = np.broadcast_to(length_N[:, None], b.depth.shape)
    cell = np.where(distance >= 0, depth_distance * n_lengths + length_NxL, -1)
    position = np.searchsorted(POSITION_EDGES, np.arange(self.seq_len), side="right") - 1
    return {"inputs": b.inputs, "gold": b.gold, "scored": b.scored(scoring, self.vocab.n_types),
            "depth": b.depth, "distance": distance,
            "span_depth": _span_depth(b.targets, b.distance, self.vocab.n_types),
            "length": np.ascontiguousarray(length_NxL),
            "position": np.broadcast_to(position.astype(np.int32), b.depth.shape).copy(),
            "depth_distance": depth_distance.astype(np.int32),
            "depth_distance_length": cell.astype(np.int32)}

  def clusters(self, split: str) -> None:
    """None: strings are independent draws, so intervals resample strings."""
    return None

  validation = dyck_splits.VALIDATION_SPLITS
  # The scan's controls: proxies fitted on deep validation strings, and where a proxy
  # breaks read by key depth at equal distance to the open (depth goes with distance).
  control_fit_split = "val_depth"
  breakdown = base.Breakdown("depth", "distance", "depth_distance")

  def monitored(self) -> dict[str, dict[str, np.ndarray]]:
    """What training reports at each evaluation: name -> arrays whose scored positions the
    model's accuracy is taken over. iid, and the closes deeper than m of the *validation*
    deep split (never a test split: checkpoints are chosen on what is logged), so that a
    log shows depth generalization as it grows and moves after iid saturates."""
    deep = dict(self.eval_arrays("val_depth"))
    deep["scored"] = deep["scored"] & (deep["depth"] > self.config.max_depth)
    return {"iid_accuracy": self.eval_arrays("iid"), "deep_accuracy": deep}

  def decision(self, scoring: str = "murty") -> metrics.Decision:
    k = self.config.n_types
    if scoring == "full_vocab":
      return metrics.Decision(0, self.vocab.size)
    return metrics.Decision(k, 2 * k, threshold=0.8 if scoring == "yao" else None)


base.register(base.TaskKind(
    "dyck", DyckTask, dyck_splits.DyckConfig,
    flags=base.dataclass_flags(dyck_splits.DyckConfig,
                               rename={"max_depth": "depth", "n_types": "types"}),
    help={"scoring": f"one of {', '.join(dyck_batch.SCORINGS)} (default: murty)",
          "split_file": "the Murty/Yao format (`(a (b b) a)`, one string per line)"}))
