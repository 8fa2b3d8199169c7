"""The seed's response shapes, built from a job's state and its task type's fields."""

from typing import Any

from django.conf import settings
from django.urls import reverse
from rest_framework import status
from rest_framework.response import Response

from factorize_app.api.prefer import preference_applied
from factorize_app.jobs import JobState, status_body
from factorize_app.tasks import TaskType


def batch_item_body(task_type: TaskType, state: JobState) -> dict[str, Any]:
    """A batch's answer for one valid item: exactly what a single submit-or-poll answers."""
    return status_body(task_type, state)


def invalid_item_body(errors: Any) -> dict[str, Any]:
    """A batch's answer for an item that failed validation: its own errors, by field."""
    return {"done": True, "job_id": None, "status": "invalid", "errors": errors}


def status_answer(task_type: TaskType, state: JobState) -> tuple[int, dict[str, Any], dict[str, str]]:
    """HTTP status, body and headers of a job's state: 200 when done; 202 with where and when
    to poll otherwise. Shared by the DRF views and the lean lane."""
    body = status_body(task_type, state)
    if state.done:
        return status.HTTP_200_OK, body, {}
    headers = {
        "Location": reverse("job-detail", kwargs={"pk": state.job_id}),
        "Retry-After": str(settings.POLL_RETRY_AFTER),
    }
    return status.HTTP_202_ACCEPTED, body, headers


def status_response(task_type: TaskType, state: JobState, wait: int | None = None) -> Response:
    code, body, headers = status_answer(task_type, state)
    return Response(body, status=code, headers={**preference_applied(wait), **headers})


def sync_response(task_type: TaskType, state: JobState) -> Response:
    """The seed's synchronous example: the full result at once, no job bookkeeping."""
    body = {
        name: value
        for name, value in status_body(task_type, state).items()
        if name not in ("load", "job_id", "status", "error", "progress")
    }
    if state.error:
        body["error"] = state.error
    return Response(body, status=status.HTTP_200_OK)
