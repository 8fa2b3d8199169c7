"""The registry of task types, loaded from the `TASK_TYPES` setting."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string
from rest_framework import serializers


def _no_setup() -> None:
    """Task types without a model to load need no start-up work."""


@dataclass(frozen=True)
class TaskType:
    """Everything the service needs to know about one kind of job, declared once."""

    name: str  # also the RQ queue name, so letters, digits, "_" and "-" only
    path: str  # URL segment: POST /<path>
    description: str
    input_serializer: type[serializers.Serializer]
    result_serializer: type[serializers.Serializer]
    handler: Callable[[dict[str, Any]], dict[str, Any]]
    setup: Callable[[], None] = _no_setup
    # Optional micro-batching, as a model server wants: one call for a batch of validated inputs,
    # answering one result per input in order. Without it, workers call `handler` per input.
    batch_handler: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None
    # None means "use the setting of the same name" (JOB_TTL, RESULT_TTL, ...).
    job_ttl: int | None = None
    result_ttl: int | None = None
    failure_ttl: int | None = None
    job_timeout: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @cached_property
    def class_prefix(self) -> str:
        """`slow_setup` -> `SlowSetup`: the stem of the classes and schema components made for it."""
        return "".join(part.title() for part in self.name.split("_"))

    @cached_property
    def input_fields(self) -> list[str]:
        return list(self.input_serializer().fields)

    @cached_property
    def result_fields(self) -> list[str]:
        return list(self.result_serializer().fields)

    @cached_property
    def _validator(self) -> serializers.Serializer:
        return self.input_serializer()

    def validate(self, data: Any) -> dict[str, Any]:
        """The input serializer's validation without building a serializer per call (the way DRF
        reuses a nested serializer); raises rest_framework's ValidationError."""
        return dict(self._validator.run_validation(data))

    def setting(self, name: str) -> int:
        """This type's TTL or timeout: its own value, else the global setting."""
        own = getattr(self, name)
        return own if own is not None else getattr(settings, name.upper())


class TaskTypeError(Exception):
    """The TASK_TYPES setting names something that is not a usable task type."""


class UnknownTaskType(LookupError):
    pass


@cache
def _registry() -> Mapping[str, TaskType]:
    registry: dict[str, TaskType] = {}
    paths: set[str] = set()
    for dotted in settings.TASK_TYPES:
        try:
            task_type = import_string(dotted)
        except ImportError as exc:
            raise TaskTypeError(f"TASK_TYPES: could not import {dotted!r}: {exc}") from exc
        if not isinstance(task_type, TaskType):
            raise TaskTypeError(f"TASK_TYPES: {dotted!r} is a {type(task_type).__name__}, not a TaskType.")
        if task_type.name in registry or task_type.path in paths:
            raise TaskTypeError(f"TASK_TYPES: {dotted!r} reuses the name or path of another task type.")
        registry[task_type.name] = task_type
        paths.add(task_type.path)
    return registry


def task_types() -> list[TaskType]:
    return list(_registry().values())


def get_task_type(name: str) -> TaskType:
    try:
        return _registry()[name]
    except KeyError:
        raise UnknownTaskType(name) from None


_ready: set[str] = set()


def ensure_setup(task_type: TaskType) -> None:
    """Run a type's one-time setup at most once per process (workers and sync mode)."""
    if task_type.name in _ready:
        return
    with task_type._lock:
        if task_type.name not in _ready:
            task_type.setup()
            _ready.add(task_type.name)


def run_task(task_name: str, data: dict[str, Any]) -> dict[str, Any]:
    """The function every queued job calls: the type's handler on validated input."""
    task_type = get_task_type(task_name)
    ensure_setup(task_type)
    return task_type.handler(data)
