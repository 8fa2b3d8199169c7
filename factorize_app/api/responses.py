"""The answers to a job's state, built from it and its task type's fields: shared by the DRF
views and the lean lane."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse
from rest_framework import status
from rest_framework.response import Response

from factorize_app.api.request_options import preference_applied
from factorize_app.jobs import JobState, status_body
from factorize_app.tasks import TaskType

# What the seed's synchronous answer leaves out of a status body: there is no job to track.
_NOT_AT_ONCE = ("load", "job_id", "status", "error", "progress")


def base_url(request: Any) -> str:
    """`scheme://host` of a request (Django's or DRF's), for the absolute URLs of a job's files."""
    return f"{request.scheme}://{request.get_host()}"


def status_answer(
    task_type: TaskType, state: JobState, *, base: str = ""
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """HTTP status, body and headers of a job's state: 200 when done; 202 with where and when
    to poll otherwise. `base`: the request's base_url()."""
    body = status_body(task_type, state, base_url=base)
    if state.done:
        return status.HTTP_200_OK, body, {}
    headers = {
        "Location": reverse("job-detail", kwargs={"pk": state.job_id}),
        "Retry-After": str(settings.POLL_RETRY_AFTER),
    }
    return status.HTTP_202_ACCEPTED, body, headers


def status_response(task_type: TaskType, state: JobState, wait: int | None = None, *, request: Any) -> Response:
    """status_answer() as a DRF response to `request`, with the wait it honoured. A state
    computed in the request (sync mode: no job, no id) answers as the seed's synchronous example
    did: the full result at once, and `error` only when it failed."""
    base = base_url(request)
    if state.job_id is None:
        body = status_body(task_type, state, base_url=base)
        body = {name: value for name, value in body.items() if name not in _NOT_AT_ONCE}
        if state.error:
            body["error"] = state.error
        return Response(body, status=status.HTTP_200_OK)
    code, body, headers = status_answer(task_type, state, base=base)
    return Response(body, status=code, headers={**preference_applied(wait), **headers})


def invalid_item_body(errors: Any) -> dict[str, Any]:
    """A batch's answer for an item that failed validation: its own errors, by field."""
    return {"done": True, "job_id": None, "status": "invalid", "errors": errors}
