"""A submit's file fields made into stored files (jobs/file_inputs.py), and its refusals as HTTP errors:
400 naming the field, 413 naming the limit, 503 naming the storage when it fails."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, Throttled, ValidationError
from rest_framework.request import Request

from factorize_app.api.identity.authentication import client_identity
from factorize_app.api.request_options import HELD
from factorize_app.jobs import file_inputs, files
from factorize_app.tasks import TaskType
from factorize_app.tasks.fields import URL


class FileInputTooLarge(ValidationError):
    """413, and in a batch the item's error like any other refusal."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE


class FileStorageUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The file storage is unavailable; try again shortly."


class FileCount:
    """The files one request has named so far (at most FILE_INPUTS_PER_REQUEST: each may be a
    fetch and an image check)."""

    def __init__(self) -> None:
        self.seen = 0
        self.deadline = time.monotonic() + settings.FILE_URL_TIMEOUT  # for all the request's URL fetches


def with_stored_files(task_type: TaskType, data: dict[str, Any], request: Request, counted: FileCount) -> dict:
    """The validated input with its files stored (their identity in place of what the client sent)."""
    named = file_inputs.count(task_type, data)
    if not named:
        return data
    counted.seen += named
    if counted.seen > settings.FILE_INPUTS_PER_REQUEST:
        field = next(name for name in task_type.file_fields if name in data)
        raise ValidationError({field: [f"At most {settings.FILE_INPUTS_PER_REQUEST} files per request."]})
    client = client_identity(request).name
    fetching = any(getattr(data.get(name), "kind", None) == URL for name in task_type.file_fields)
    try:
        with _held_while_fetching(client) if fetching else contextlib.nullcontext():
            return _resolved(task_type, data, request, client, counted)
    except file_inputs.FileInputTooLarge as exc:
        raise FileInputTooLarge({exc.field: [str(exc)], "limit": "FILE_INPUT_MAX_BYTES"}) from None
    except file_inputs.FileRefused as exc:
        raise ValidationError({exc.field: [str(exc)]}) from None
    except files.StorageUnavailable as exc:
        raise FileStorageUnavailable({"detail": str(exc), "storage": settings.JOB_FILES_STORAGE}) from None


def _resolved(task_type: TaskType, data: dict[str, Any], request: Request, client: str, counted: FileCount) -> dict:
    return file_inputs.resolve(
        task_type=task_type,
        data=data,
        client=client,
        own_hosts=(request.get_host().lower(),),
        deadline=counted.deadline,
    )


@contextlib.contextmanager
def _held_while_fetching(client: str) -> Iterator[None]:
    """A request fetching file URLs holds its thread as a long poll does: counted against the
    client's and the process's caps on held requests (MAX_HELD_PER_CLIENT, MAX_HELD_REQUESTS)."""
    if not HELD.take(client):
        raise Throttled(wait=1, detail="Too many of this client's requests hold the server at once (fetching file "
                        "URLs or waiting: MAX_HELD_PER_CLIENT); try again shortly.")  # fmt: skip
    try:
        yield
    finally:
        HELD.give_back(client)
