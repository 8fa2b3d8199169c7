"""The lean poll lane: the hot JSON paths answered without Django's request cycle.

`POST /<task type>` with a JSON body and `GET /jobs/<id>`, from API clients (no cookie, no
HTML wanted, no `Prefer` header), are validated by the task type's own serializer and answered
by the same job-service call and body builder as the DRF views, in one Redis round trip. Anything
else, and every error (invalid input, unknown job, Redis down), falls through to Django and DRF,
so the browsable API, the error shapes and the OpenAPI docs stay in one place.
"""

from __future__ import annotations

import functools
import io
import json
import time
from typing import Any

import orjson
from django.conf import settings
from rest_framework.exceptions import ValidationError

from factorize_app import jobs
from factorize_app.api.clients import client_name
from factorize_app.api.metrics import LATENCY, REQUESTS
from factorize_app.api.responses import status_answer
from factorize_app.api.throttling import POLL, SUBMIT, rate_limit
from factorize_app.tasks import TaskType, get_task_type, task_types

MAX_BODY = 64 * 1024  # larger bodies (batches) go to DRF, which also enforces MAX_REQUEST_BYTES
# Clients poll by posting the same body again: remember what each body validated to (the
# serializer is deterministic), so a repeated poll skips validation. Bounded; cleared when full.
_VALIDATED: dict[tuple[str, bytes], dict[str, Any]] = {}
_VALIDATED_MAX = 10_000
_REASONS = {200: "200 OK", 202: "202 Accepted"}
_COMMON_HEADERS = [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff"), ("Vary", "Accept")]


class LeanPollApp:
    """WSGI middleware in front of Django's application."""

    def __init__(self, django_app):
        self.django_app = django_app
        self.submit_paths: dict[str, TaskType] = {}
        for task_type in task_types():
            self.submit_paths[f"/{task_type.path}"] = task_type
            self.submit_paths[f"/{task_type.path}/"] = task_type

    def __call__(self, environ, start_response):
        if settings.EXECUTION_MODE == "async" and _plain_api_client(environ):
            started = time.perf_counter()
            answer = self._answer(environ)
            if answer is not None:
                route, status, body, headers = answer
                payload = _dumps(body)
                start_response(_REASONS[status], [*_COMMON_HEADERS, ("Content-Length", str(len(payload))), *headers])
                latency, requests = _metrics(environ["REQUEST_METHOD"], route, status)
                latency.observe(time.perf_counter() - started)
                requests.inc()
                return [payload]
        return self.django_app(environ, start_response)

    def _answer(self, environ) -> tuple[str, int, dict[str, Any], list[tuple[str, str]]] | None:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        try:
            if method == "POST" and path in self.submit_paths:
                return self._submit(environ, self.submit_paths[path])
            if method == "GET" and path.startswith("/jobs/"):
                return self._status(environ, path.removeprefix("/jobs/").rstrip("/"))
        except (jobs.QueueUnavailable, jobs.JobNotFound, jobs.Throttled):
            return None  # Django answers these with the documented error bodies
        return None

    def _submit(self, environ, task_type: TaskType):
        if not environ.get("CONTENT_TYPE", "").startswith("application/json"):
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            return None
        if not 0 < length <= min(MAX_BODY, settings.DATA_UPLOAD_MAX_MEMORY_SIZE or MAX_BODY):
            return None
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)  # for Django, if it answers after all
        validated = _VALIDATED.get((task_type.name, body))
        if validated is None:
            validated = _validate(task_type, body)
            if validated is None:
                return None  # Django answers with the parse or validation error
            if len(_VALIDATED) >= _VALIDATED_MAX:
                _VALIDATED.clear()
            _VALIDATED[(task_type.name, body)] = validated
        state = jobs.submit(
            task_type=task_type, data=validated, client=client_name(environ), rate_limit=rate_limit(SUBMIT, environ)
        )
        return f"{task_type.name}-list", *_answer_parts(task_type, state)

    def _status(self, environ, job_id: str):
        state = jobs.get_status(job_id=job_id, rate_limit=rate_limit(POLL, environ))
        return "job-detail", *_answer_parts(get_task_type(state.task_name), state)


def _validate(task_type: TaskType, body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    # orjson reads integers beyond 64 bits as floats, which validation rejects: such inputs
    # fall through to DRF, whose stdlib parser keeps them exact.
    try:
        return task_type.validate(data)
    except ValidationError:
        return None


@functools.cache
def _metrics(method: str, route: str, status: int):
    """The labelled children, looked up once (labels() costs as much as the increment)."""
    return LATENCY.labels(method, route), REQUESTS.labels(method, route, str(status))


def _plain_api_client(environ) -> bool:
    accept = environ.get("HTTP_ACCEPT", "*/*")
    return (
        "HTTP_COOKIE" not in environ
        and "HTTP_PREFER" not in environ
        and "HTTP_AUTHORIZATION" not in environ
        and "text/html" not in accept
        and ("json" in accept or "*/*" in accept)
        and (not settings.SECURE_SSL_REDIRECT or _is_secure(environ))  # else Django redirects it
    )


def _is_secure(environ) -> bool:
    """Django's request.is_secure(): the trusted proxy's header when it is present, else the scheme."""
    if settings.SECURE_PROXY_SSL_HEADER:
        header, secure_value = settings.SECURE_PROXY_SSL_HEADER
        value = environ.get(header)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return environ.get("wsgi.url_scheme") == "https"


def _answer_parts(task_type: TaskType, state: jobs.JobState):
    code, body, headers = status_answer(task_type, state)
    return code, body, list(headers.items())


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # integers beyond 64 bits (factors of a 100-digit number)
        return json.dumps(body, separators=(",", ":")).encode()
