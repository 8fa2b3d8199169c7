"""The registry of task types: those the `TASK_TYPES` setting names, by default every package
under factorize_app/tasks/ that declares a TASK_TYPE (project/task_discovery.py).

A task type's declaration (name, path, serializers, TTLs, timeout) is what the service itself
needs, and imports nothing beyond the service's own requirements; its implementation (the model:
`setup()`, `handle()`, optional `handle_batch()`) is named by a dotted path and imported only where
a job of the type runs, so the web server and the workers of other types never import a model's
dependencies (Cog's `predict.py:Predictor` idea).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string
from rest_framework import serializers
from rest_framework.settings import api_settings

from factorize_app.tasks import streaming
from factorize_app.tasks.deployment import Deployment
from factorize_app.tasks.fields import FileInput

logger = logging.getLogger("factorize_app.tasks")


# What a handler may report while it runs: a fraction done (0..1, None when unknown) and a message.
Progress = Callable[[float | None, str], None]


@cache
def _takes_progress(method: Callable[..., Any]) -> bool:
    return "progress" in inspect.signature(method).parameters


class ImplementationUnavailable(ImportError):
    """A task type's implementation cannot be imported here: a package it needs is missing."""


@dataclass(frozen=True)
class TaskType:
    """Everything the service needs to know about one kind of job, declared once."""

    name: str  # also the RQ queue name, so letters, digits, "_" and "-" only
    path: str  # URL segment: POST /<path>
    description: str
    input_serializer: type[serializers.Serializer]
    result_serializer: type[serializers.Serializer]
    # "package.module:Name": a class (instantiated once per process: the loaded model) or any object
    # with `handle(data) -> result`, and optionally `setup()` (the one-time model load) and
    # `handle_batch(inputs) -> results` (one model call for a batch, one result per input in order).
    implementation: str
    # The implementation's own pinned requirements (a path from the project root), if it has any
    # beyond the service's: installed only in the images and environments whose workers run it.
    requirements: str | None = None
    # Example inputs, each valid against input_serializer: shown as the request body's example in
    # the OpenAPI schema, the browsable form and the front page, and answered by the contract test.
    examples: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    # For an implementation with handle_batch: the most inputs in one call (instead of
    # WORKER_BATCH_SIZE), and how long a worker may wait (seconds) for more jobs to fill a short
    # batch, as model servers do (Triton's max_queue_delay_microseconds, Ray Serve's
    # batch_wait_timeout_s).
    max_batch_size: int | None = None
    max_batch_delay: float = 0.01
    # None means "use the setting of the same name" (JOB_TTL, RESULT_TTL, ...).
    job_ttl: int | None = None
    result_ttl: int | None = None
    failure_ttl: int | None = None
    job_timeout: int | None = None
    deployment: Deployment = Deployment()  # its workers' resources, scaling and weights (deployment.py)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @cached_property
    def model(self) -> Any:
        """The implementation, imported on first use (in a worker, or sync mode's processes)."""
        module_path, _, attribute = self.implementation.partition(":")
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == module_path or module_path.startswith(exc.name + ".")):
                raise TaskTypeError(f"{self.name}: no module {module_path!r} (its implementation)") from exc
            hint = f": pip install -r {self.requirements}" if self.requirements else ""
            raise ImplementationUnavailable(
                f"task type {self.name!r} needs the package {exc.name!r}, which is not installed{hint}"
            ) from exc
        target = getattr(module, attribute, None) if attribute else module
        if target is None or not callable(getattr(target, "handle", None)):
            raise TaskTypeError(f"{self.name}: {self.implementation!r} has no handle() method")
        return target() if isinstance(target, type) else target

    def handler(
        self, data: dict[str, Any], progress: Progress | None = None, output: streaming.Emit | None = None
    ) -> dict[str, Any]:
        """The implementation's handle(); `progress(fraction or None, message)` is passed to one
        that takes a `progress` argument, and a handler that ignores progress keeps working. A
        handle() that is a generator is run to its end, each piece it yields passed to `output`
        (tasks/streaming.py): its result is the whole."""
        if progress is not None and _takes_progress(self.model.handle):
            answer = self.model.handle(data, progress=progress)
        else:
            answer = self.model.handle(data)
        return streaming.drain(self, answer, output) if streaming.is_stream(answer) else answer

    @property
    def batch_handler(self) -> Callable[..., list[dict[str, Any]]] | None:
        """handle_batch(inputs[, progress]), if the implementation has one; its progress is the
        whole batch's, reported for every job in it. One that is a generator yields (index, piece)
        pairs, each passed to `output(index, piece)`."""
        handle_batch = getattr(self.model, "handle_batch", None)
        if handle_batch is None:
            return None

        def batch(
            inputs: list[dict[str, Any]], progress: Progress | None = None, output: streaming.BatchEmit | None = None
        ) -> list[dict[str, Any]]:
            if progress is not None and _takes_progress(handle_batch):
                answer = handle_batch(inputs, progress=progress)
            else:
                answer = handle_batch(inputs)
            if streaming.is_stream(answer):  # (index, piece) pairs: each passed to output(index, piece)
                return streaming.drain_batch(self, answer, len(inputs), output)
            return answer

        return batch

    def setup(self) -> None:
        setup = getattr(self.model, "setup", None)
        if setup is not None:
            setup()

    @cached_property
    def class_prefix(self) -> str:
        """`slow_setup` -> `SlowSetup`: the stem of the classes and schema components made for it."""
        return "".join(part.title() for part in self.name.split("_"))

    @cached_property
    def input_fields(self) -> list[str]:
        return list(self.input_serializer().fields)

    @cached_property
    def file_fields(self) -> tuple[str, ...]:
        """The input fields that take a file (FileInput): stored by the job service at submit, a
        local path for the handler."""
        return tuple(name for name, field in self.input_serializer().fields.items() if isinstance(field, FileInput))

    @cached_property
    def result_fields(self) -> list[str]:
        return list(self.result_serializer().fields)

    @cached_property
    def _validator(self) -> serializers.Serializer:
        return self.input_serializer()

    def validate(self, data: Any) -> dict[str, Any]:
        """The input serializer's validation without building a serializer per call (the way DRF
        reuses a nested serializer); raises rest_framework's ValidationError.

        Input is hostile: a field that breaks on it (a ValueError from a conversion, a
        RecursionError on deep nesting) has rejected it, so that is a ValidationError too, logged
        so the field can be fixed, never a 500 or a lost batch."""
        try:
            return dict(self._validator.run_validation(data))
        except serializers.ValidationError as exc:
            if isinstance(exc.detail, dict):
                raise
            # Not an object at all (null, a list, a number): an error of the whole input, named so.
            raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: exc.detail}) from None
        except (ValueError, TypeError, ArithmeticError, RecursionError, UnicodeError) as exc:
            extra = {"task_type": self.name, "error": repr(exc)}
            logger.warning("input rejected by an error in validation", extra=extra)
            raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: ["Invalid input."]}) from None

    def setting(self, name: str) -> int:
        """This type's TTL or timeout: its own value, else the global setting."""
        own = getattr(self, name)
        return own if own is not None else getattr(settings, name.upper())


class TaskTypeError(Exception):
    """The TASK_TYPES setting names something that is not a usable task type."""


class UnknownTaskType(LookupError):
    pass


def registered_paths() -> list[str]:
    """TASK_TYPES as dotted paths: a folder name is its package's TASK_TYPE, and `*` every type
    discovered under factorize_app/tasks/ (DEFAULT_TASK_TYPES) not also listed on its own."""
    entries = [
        entry if "." in entry or entry == "*" else f"{__package__}.{entry}.TASK_TYPE" for entry in settings.TASK_TYPES
    ]
    paths = []
    for entry in entries:
        if entry == "*":
            paths += [path for path in settings.DEFAULT_TASK_TYPES if path not in entries and path not in paths]
        else:
            paths.append(entry)
    return paths


@cache
def _registry() -> Mapping[str, TaskType]:
    registry: dict[str, TaskType] = {}
    paths: set[str] = set()
    for dotted in registered_paths():
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
