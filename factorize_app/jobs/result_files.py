"""A job's files and large results as outputs: stored outside Redis, referred to from it.

A handler gives a result field declared `FileOutput` as a `pathlib.Path`, `bytes` or an
`OutputFile`; the worker stores each (files.store: job_id = the job's, owner "", the result's
TTL) and the result Redis keeps holds only the reference {"id", "name", "size", "content_type",
"sha256"}. A result whose JSON is still over RESULT_MAX_INLINE_BYTES is stored as a JSON file too,
and Redis keeps `{"result_file": <reference>}` (with the file fields' references, if any).
Clients see each reference with its URL (`shown`); the job's owners may read the files
(`files.readable_by`, for GET /files/<id>) until the result expires.

A storage that fails is retried for OUTPUT_STORE_RETRY_SECONDS, then `OutputsNotStored` tells the
worker to hand the job back to its queue: nothing is lost, the job runs again later. A result
the service cannot keep (not JSON, a file field given something else, a file over
OUTPUT_FILE_MAX_BYTES) is `OutputRefused`: the job's own failure.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings

from factorize_app.jobs import files
from factorize_app.jobs.errors import QueueUnavailable, translate_outages
from factorize_app.tasks import OutputFile, TaskType
from factorize_app.tasks.fields import FileOutput

logger = logging.getLogger("factorize_app.jobs")

RESULT_FILE = "result_file"  # the status body's link to a result stored as a file
JSON_TYPE = "application/json"
FILE_PATH = "/files/"  # GET /files/<id> (api/files.py) serves the bytes
CHUNK = 1024 * 1024
MAX_NAME = 200  # characters of a file name
RETRY_FIRST, RETRY_CAP = 0.5, 5.0  # seconds between tries of a failing storage, doubling
REFERENCE = ("id", "name", "size", "content_type", "sha256")


class OutputRefused(ValueError):
    """The result cannot be kept as the handler gave it: the job fails, with this message."""


class OutputsNotStored(Exception):
    """The file storage (or Redis) failed for longer than the worker waits: run the job again later."""


def file_fields(task_type: TaskType) -> dict[str, FileOutput]:
    """The type's result fields declared as files, by name (looked up once per type: every poll asks)."""
    declared = _FILE_FIELDS.get(task_type.name)
    if declared is None:
        fields = task_type.result_serializer().fields
        declared = {name: field for name, field in fields.items() if isinstance(field, FileOutput)}
        _FILE_FIELDS[task_type.name] = declared
    return declared


_FILE_FIELDS: dict[str, dict[str, FileOutput]] = {}


def store_outputs(
    *,
    task_type: TaskType,
    job_id: str,
    result: Any,
    ttl: int,
    owner: str = "",
    patience: float | None = None,
    give_up: Callable[[], bool] = lambda: False,
    spill: bool = True,
) -> Any:
    """The result as Redis is to keep it: each file field's value stored (its reference in its
    place), then the whole stored as a JSON file when it is still too large (unless not `spill`:
    sync mode keeps no result in Redis). `patience`: seconds to retry a failing storage (None:
    OUTPUT_STORE_RETRY_SECONDS), unless `give_up()` says stop."""
    patience = settings.OUTPUT_STORE_RETRY_SECONDS if patience is None else patience
    ttl = ttl if ttl > 0 else task_type.setting("result_ttl")  # RQ's -1 ("kept for ever"): not for files
    deadline = time.monotonic() + patience
    stored = False
    declared = file_fields(task_type)
    if declared and isinstance(result, dict):
        result = dict(result)
        for name, field in declared.items():
            if result.get(name) is not None:
                store = _file_store(result[name], name, field, job_id=job_id, owner=owner, ttl=ttl)
                result[name] = _reference(_retrying(store, deadline, give_up, job_id))
                stored = True
    try:
        text = json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise OutputRefused(f"the result is not JSON: {exc}") from None
    if spill and len(text) > settings.RESULT_MAX_INLINE_BYTES:  # characters: ASCII JSON, one byte each
        kept, data = {}, text.encode()
        if declared and isinstance(result, dict):  # the file fields' references stay in Redis
            kept = {name: value for name, value in result.items() if name in declared}
            data = json.dumps({name: value for name, value in result.items() if name not in declared}).encode()
        store = _data_store(data, JSON_TYPE, f"{job_id or task_type.name}-result.json", job_id, owner, ttl)
        result, stored = {**kept, RESULT_FILE: _reference(_retrying(store, deadline, give_up, job_id))}, True
    if stored and job_id:
        _retrying(lambda: _owners_outlive(job_id, ttl), deadline, give_up, job_id)
    return result


def _file_store(value: Any, field: str, declared: FileOutput, **where: Any) -> Callable[[], files.StoredFile]:
    """How to store one file field's value (called again on each retry)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = OutputFile(data=bytes(value))
    elif isinstance(value, os.PathLike):
        value = OutputFile(path=value)
    elif not isinstance(value, OutputFile):
        raise OutputRefused(
            f"result field {field!r} is a file: give a pathlib.Path, bytes or an OutputFile, not {type(value).__name__}"
        )
    content_type = value.content_type or declared.content_type
    if value.data is not None:
        name = _safe_name(value.name or field + (mimetypes.guess_extension(content_type) or ""))
        return _data_store(value.data, content_type, name, where["job_id"], where["owner"], where["ttl"])
    path = Path(value.path)
    name = _safe_name(value.name or path.name)
    if not path.is_file():
        raise OutputRefused(f"result field {field!r}: no file at {path}")

    def store() -> files.StoredFile:
        stored = _store(_read(path, field), content_type, name, **where)
        if value.delete_after:
            path.unlink(missing_ok=True)
        return stored

    return store


def _safe_name(name: str) -> str:
    """A file name to show and save as: no directories, no control characters, not too long."""
    name = "".join(char for char in Path(str(name).replace("\\", "/")).name if char.isprintable())
    return name[:MAX_NAME] or "output"


def _data_store(data: bytes, content_type: str, name: str, job_id: str, owner: str, ttl: int):
    view = memoryview(data)
    chunks = lambda: (view[start : start + CHUNK] for start in range(0, len(view), CHUNK))  # noqa: E731
    return lambda: _store(chunks(), content_type, name, job_id=job_id, owner=owner, ttl=ttl)


def _read(path: Path, field: str) -> Iterator[bytes]:
    try:
        with path.open("rb") as source:
            while chunk := source.read(CHUNK):
                yield chunk
    except OSError as exc:  # the handler's file, not the storage
        raise OutputRefused(f"result field {field!r}: cannot read {path}: {exc.strerror or exc}") from None


def _store(chunks, content_type: str, name: str, *, job_id: str, owner: str, ttl: int) -> files.StoredFile:
    limit = settings.OUTPUT_FILE_MAX_BYTES
    try:
        return files.store(
            chunks=chunks, content_type=content_type, name=name, owner=owner, job_id=job_id, ttl=ttl, max_bytes=limit
        )
    except files.FileTooLarge:
        raise OutputRefused(f"an output file may hold at most {limit} bytes (OUTPUT_FILE_MAX_BYTES)") from None


def _retrying(action: Callable[[], Any], deadline: float, give_up: Callable[[], bool], job_id: str) -> Any:
    """`action()` until the storage and Redis take it or the deadline passes (OutputsNotStored)."""
    wait, said = RETRY_FIRST, False
    while True:
        try:
            result = action()
            if said:
                logger.info("the file storage takes the job's outputs again", extra={"job_id": job_id})
            return result
        except (files.StorageUnavailable, QueueUnavailable) as exc:
            if time.monotonic() + wait > deadline or give_up():
                raise OutputsNotStored(f"the job's outputs could not be stored: {exc}") from exc
            if not said:
                extra = {"job_id": job_id, "error": str(exc)}
                logger.warning("storing the job's outputs failed; retrying", extra=extra)
                said = True
            time.sleep(wait)
            wait = min(2 * wait, RETRY_CAP)


def _reference(stored: files.StoredFile) -> dict[str, Any]:
    return {name: getattr(stored, name) for name in REFERENCE}


@translate_outages
def _owners_outlive(job_id: str, ttl: int) -> None:
    """The job's owners are who may read its files: kept at least as long (a job that waited on
    a failing storage may have run past their TTL)."""
    from factorize_app.jobs.control import keep_owners  # control reads files, which read this module

    keep_owners(job_id=job_id, ttl=ttl + 60)


def shown(task_type: TaskType, result: dict[str, Any], *, base_url: str = "") -> dict[str, Any]:
    """The result as clients see it: each file reference as a file object with its URL."""
    declared = file_fields(task_type)
    if not declared and RESULT_FILE not in result:
        return result
    shown = dict(result)
    for name in (*declared, RESULT_FILE):
        if isinstance(shown.get(name), dict):
            shown[name] = file_object(shown[name], base_url=base_url)
    return shown


def file_object(reference: dict[str, Any], *, base_url: str = "") -> dict[str, Any]:
    """{"url", "id", "name", "size", "content_type", "sha256"}: the URL on PUBLIC_URL when set,
    else on `base_url` (the request's scheme and host), else a path."""
    base = settings.PUBLIC_URL or base_url.rstrip("/")
    return {"url": f"{base}{FILE_PATH}{reference['id']}", **{name: reference.get(name) for name in REFERENCE}}
