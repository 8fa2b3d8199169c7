"""Task types: what the service computes. Plain computation; no Redis, no HTTP.

Adding a model means one module that builds a `TaskType` and one line in the
`TASK_TYPES` setting; URLs, queues, workers and docs derive from the registry.
"""

from factorize_app.tasks.registry import (
    TaskType,
    TaskTypeError,
    UnknownTaskType,
    ensure_setup,
    get_task_type,
    run_task,
    task_types,
)

__all__ = [
    "TaskType",
    "TaskTypeError",
    "UnknownTaskType",
    "ensure_setup",
    "get_task_type",
    "run_task",
    "task_types",
]
