"""Task types: what the service computes. Plain computation; no Redis, no HTTP.

Adding a model means one package, found by its folder (`manage.py startmodel NAME` writes one): a
declaration (its `__init__.py` builds a `TaskType`, importing only what the service needs), an
implementation module (the model, with its heavy imports), and, if it needs them, its own
requirements file. URLs, queues, workers and docs derive from the registry.
"""

from factorize_app.tasks.outputs import OutputFile
from factorize_app.tasks.registry import (
    ImplementationUnavailable,
    TaskType,
    TaskTypeError,
    UnknownTaskType,
    ensure_setup,
    get_task_type,
    run_task,
    task_types,
)

__all__ = [
    "ImplementationUnavailable",
    "OutputFile",
    "TaskType",
    "TaskTypeError",
    "UnknownTaskType",
    "ensure_setup",
    "get_task_type",
    "run_task",
    "task_types",
]
