"""Tasks: what train.py, evaluate.py and the engine need to know about a dataset.

A task (`Task`, the written contract) provides its vocabulary, a model config, training
batches as a function of the step, and per-split evaluation arrays (`inputs`, `gold`,
`scored`, all [N, L]) with the `Decision` that judges a prediction, plus its groups:
integer buckets per position (for Dyck, the depth and the distance bucket; for code, the
character category and repeated-word bucket) that metrics are also reported by.

Each task is one module here that registers itself (`register(TaskKind(...))`, see
`base.py`): `dyck.py` (`DyckTask`) and `code.py` (`CodeTask`). A new task is one more
module and its import below.
"""

# Importing a task's module registers it in TASKS.
from pipeline.tasks import dyck, code  # noqa: F401  (isort: skip)
from pipeline.tasks.base import (TASKS, Breakdown, Flag, Task, TaskKind, TaskView,
                                 dataclass_flags,
                                 from_config, from_run_config, help_for, kind_of, load_trained,
                                 model_accuracy, register)
from pipeline.tasks.code import CodeTask
from pipeline.tasks.dyck import DISTANCE_EDGES, POSITION_EDGES, DyckTask

__all__ = ["TASKS", "CodeTask", "DISTANCE_EDGES", "DyckTask", "Flag", "POSITION_EDGES", "Task",
           "TaskKind", "TaskView", "dataclass_flags", "from_config", "from_run_config",
           "help_for", "kind_of", "load_trained", "model_accuracy", "register"]
