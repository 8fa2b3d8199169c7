"""A submit's file fields made into stored files (jobs/file_inputs.py), and its refusals as HTTP errors:
400 naming the field, 413 naming the limit, 503 naming the storage when it fails."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request

from factorize_app.api.identity.authentication import client_identity
from factorize_app.jobs import file_inputs, files
from factorize_app.tasks import TaskType


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
    try:
        return file_inputs.resolve(
            task_type=task_type,
            data=data,
            client=client_identity(request).name,
            own_hosts=(request.get_host().lower(),),
            deadline=counted.deadline,
        )
    except file_inputs.FileInputTooLarge as exc:
        raise FileInputTooLarge({exc.field: [str(exc)], "limit": "FILE_INPUT_MAX_BYTES"}) from None
    except file_inputs.FileRefused as exc:
        raise ValidationError({exc.field: [str(exc)]}) from None
    except files.StorageUnavailable as exc:
        raise FileStorageUnavailable({"detail": str(exc), "storage": settings.JOB_FILES_STORAGE}) from None
