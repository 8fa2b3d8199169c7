"""The lean poll lane: the hot JSON paths answered without Django's request cycle.

`POST /<task type>` with a JSON body and `GET /jobs/<id>`, from API clients (no cookie, no
HTML wanted), long polls (`Prefer: wait`) included, are validated by the task type's own
serializer and answered by the same job-service call and body builder as the DRF views, in one
Redis round trip; `GET /jobs/<id>` as an event stream (`Accept: text/event-stream`) gets the
stream view's own body (api/streams.py `stream_of`). Anything else, and every error (invalid
input, unknown job, Redis down, any exception at all), falls through to Django and DRF, so the
browsable API, the error shapes and the OpenAPI docs stay in one place, and every answer is
counted in /metrics.

A fast path applies every check the slow path applies. What Django's middleware and DRF do to
these requests, and how the lane matches it:
- `ALLOWED_HOSTS` (HttpRequest.get_host): the same host, validated by Django's own
  `validate_host`; any other host falls through to Django's 400.
- SecurityMiddleware: the SSL redirect (falls through when Django would redirect) and its
  response headers (nosniff, Referrer-Policy, Cross-Origin-Opener-Policy; HSTS on https);
  XFrameOptionsMiddleware's `X-Frame-Options`.
- CommonMiddleware: `DISALLOWED_USER_AGENTS` and `PREPEND_WWW` (the lane stands aside when set).
- RequestBodyLimitMiddleware (api/bodies.py): the lane reads at most lean_requests.MAX_BODY bytes,
  below MAX_REQUEST_BYTES.
- The views' long poll: `Prefer: wait` parsed by the same function, held under the same per-client
  and per-process caps (api/request_options.py), answered with the same `Preference-Applied`.
- DRF: the same throttle (counted in the poll's round trip), the same validation
  (`TaskType.validate`), JSON only by content type. The same authentication: an API key this
  process has already verified (its cache of key lookups), whose identity then counts for fair
  order, limits and ownership as in the views; a key not in the cache, a bad one, or none when
  REQUIRE_API_KEY is on, falls through to DRF (which looks it up, or answers 401).
- Session, CSRF and messages: requests with a cookie never take the lane.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import time
from typing import Any

import orjson
from django.core.signals import setting_changed
from django.dispatch import receiver
from rest_framework.exceptions import ValidationError

from factorize_app import jobs
from factorize_app.api import lean_requests, streams
from factorize_app.api.bodies import declared_length
from factorize_app.api.identity.authentication import cached_identity
from factorize_app.api.identity.clients import ClientIdentity, add_traceback, limits_of, reading_owner
from factorize_app.api.metrics import LATENCY, REQUESTS
from factorize_app.api.request_options import holding, parse_wait, preference_applied
from factorize_app.api.responses import status_answer
from factorize_app.api.serializers import WEBHOOK_FIELDS
from factorize_app.api.throttling import POLL, SUBMIT, rate_limit
from factorize_app.tasks import TaskType, get_task_type, task_types

logger = logging.getLogger("factorize_app.api")

_REASONS = {200: "200 OK", 202: "202 Accepted"}
JSON = lean_requests.JSON


class ValidatedBodies:
    """What each recently polled body validated to (the serializer is deterministic), so a
    repeated poll skips validation. Bounded by bytes, not entries: only bodies up to
    `max_body` bytes are kept, each costing its length plus a fixed estimate of the key, the
    validated dict and the table slot; when the total would pass `max_bytes` the table is
    cleared. A process holds at most about `max_bytes` here, whatever clients send."""

    ENTRY_OVERHEAD = 600  # bytes: key tuple, bytes object, validated dict and its values, dict slot

    def __init__(self, *, max_bytes: int, max_body: int) -> None:
        self.max_bytes, self.max_body = max_bytes, max_body
        self._entries: dict[tuple[str, bytes], dict[str, Any]] = {}
        self.bytes = 0

    def get(self, task_name: str, body: bytes) -> dict[str, Any] | None:
        return self._entries.get((task_name, body))

    def put(self, task_name: str, body: bytes, validated: dict[str, Any]) -> None:
        if len(body) > self.max_body:
            return
        size = len(body) + self.ENTRY_OVERHEAD
        if self.bytes + size > self.max_bytes:
            self._entries.clear()
            self.bytes = 0
        if (task_name, body) not in self._entries:
            self._entries[(task_name, body)] = validated
            self.bytes += size


_VALIDATED = ValidatedBodies(max_bytes=4 * 1024 * 1024, max_body=1024)


class LeanPollApp:
    """WSGI middleware in front of Django's application."""

    def __init__(self, django_app):
        self.django_app = django_app
        self.submit_paths: dict[str, TaskType] = {}
        for task_type in task_types():
            self.submit_paths[f"/{task_type.path}"] = task_type
            self.submit_paths[f"/{task_type.path}/"] = task_type

    def __call__(self, environ, start_response):
        lane = lean_requests.lane_settings()
        if lane.enabled and lean_requests.event_stream_client(environ, lane):
            stream = self._stream(environ, lane, start_response)
            if stream is not None:
                return stream
        elif lane.enabled and lean_requests.plain_api_client(environ, lane):
            started = time.perf_counter()
            try:
                identity = cached_identity(environ)
                answer = self._answer(environ, identity, lane) if identity is not None else None
            except Exception:  # a bug or a hostile input nothing else caught: Django answers and counts it
                logger.exception("lean lane: falling through to Django", extra={"path": environ.get("PATH_INFO")})
                answer = None
            if answer is not None:
                route, status, body, headers = answer
                payload = _dumps(body)
                start_response(
                    _REASONS[status],
                    [*lean_requests.response_headers(environ, lane), ("Content-Length", str(len(payload))), *headers],
                )
                latency, requests = _metrics(environ["REQUEST_METHOD"], route, status)
                latency.observe(time.perf_counter() - started)
                requests.inc()
                return [payload]
        return self.django_app(environ, start_response)

    def _answer(
        self, environ, identity: ClientIdentity, lane: lean_requests.LaneSettings
    ) -> tuple[str, int, dict[str, Any], list] | None:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        try:
            if method == "POST" and path in self.submit_paths:
                return self._submit(environ, self.submit_paths[path], identity, lane)
            if method == "GET" and path.startswith("/jobs/"):
                return self._status(environ, path.removeprefix("/jobs/").rstrip("/"), identity, lane)
        except (jobs.QueueUnavailable, jobs.JobNotFound, jobs.Throttled, jobs.ClientLimitExceeded):
            return None  # Django answers these with the documented error bodies
        return None

    def _submit(self, environ, task_type: TaskType, identity: ClientIdentity, lane: lean_requests.LaneSettings):
        validated = _input(environ, task_type, lane)
        if validated is None:
            return None
        limit = _rate_limit(SUBMIT, identity.name)

        def submit(wait: int | None) -> jobs.JobState:
            return jobs.submit(task_type=task_type, data=validated, wait=wait or 0, client=identity.name,
                               rate_limit=limit, limits=limits_of(identity))  # fmt: skip

        state, wait = _waiting(environ, identity, submit)
        return f"{task_type.name}-list", *_answer_parts(task_type, state, wait, environ, lane)

    def _status(self, environ, job_id: str, identity: ClientIdentity, lane: lean_requests.LaneSettings):
        limit = _rate_limit(POLL, identity.name)

        def status(wait: int | None) -> jobs.JobState:
            return jobs.get_status(job_id=job_id, wait=wait or 0, rate_limit=limit, owner=reading_owner(identity))

        state, wait = _waiting(environ, identity, status)
        code, body, headers = _answer_parts(get_task_type(state.task_name), state, wait, environ, lane)
        return "job-detail", code, add_traceback(body, state, identity), headers

    def _stream(self, environ, lane: lean_requests.LaneSettings, start_response):
        """`GET /jobs/<id>` as an event stream (api/streams.py): the same body, holds and caps as
        the stream view's, the request counted in the job's poll; anything else that view would
        answer (a 404, a 503, a 204 after the end, a bad Last-Event-ID) falls through to it."""
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        submitted = self.submit_paths.get(path) if method == "POST" else None
        if environ.get("QUERY_STRING") or not (submitted or method == "GET" and path.startswith("/jobs/")):
            return None
        started = time.perf_counter()
        try:
            identity = cached_identity(environ)
            if identity is None:
                return None
            after = jobs.valid_event_id(environ.get("HTTP_LAST_EVENT_ID"))
            rate_limit = _rate_limit(POLL, identity.name)
            if submitted is not None:  # submit, then stream the job: the request counted as the submit
                job_id, rate_limit = _submitted(environ, submitted, identity, lane), None
                if job_id is None:
                    return None
            else:
                job_id = path.removeprefix("/jobs/").rstrip("/")
            stream = streams.stream_of(
                job_id, after, client=identity.name, owner=reading_owner(identity), rate_limit=rate_limit,
                base=lean_requests.base_url(environ, lane),
            )  # fmt: skip
        except (ValueError, jobs.QueueUnavailable, jobs.JobNotFound, jobs.Throttled, jobs.ClientLimitExceeded):
            return None  # Django answers these with the documented error bodies
        except Exception:  # a bug or a hostile input nothing else caught: Django answers and counts it
            logger.exception("lean lane: falling through to Django", extra={"path": path})
            return None
        if stream is None or stream is streams.NO_CONTENT:
            return None
        start_response(
            "200 OK", [*lean_requests.response_headers(environ, lane, streams.EVENT_STREAM), *streams.STREAM_HEADERS]
        )
        latency, requests = _metrics(method, f"{submitted.name}-list" if submitted else "job-detail", 200)
        latency.observe(time.perf_counter() - started)
        requests.inc()
        return stream


def _submitted(environ, task_type: TaskType, identity: ClientIdentity, lane: lean_requests.LaneSettings) -> str | None:
    """A submit that streams its job (no wait: the stream is the wait): its job id, or None for Django to answer."""
    if "HTTP_PREFER" in environ or (data := _input(environ, task_type, lane)) is None:
        return None
    limit = _rate_limit(SUBMIT, identity.name)
    return jobs.submit(
        task_type=task_type, data=data, wait=0, client=identity.name, rate_limit=limit, limits=limits_of(identity)
    ).job_id


def _input(environ, task_type: TaskType, lane: lean_requests.LaneSettings) -> dict[str, Any] | None:
    """A submit's validated JSON input (cached by body), or None: Django answers it (any other
    content type or length, a parse or validation error) from the body kept for it."""
    if not environ.get("CONTENT_TYPE", "").startswith("application/json"):
        return None
    length = declared_length(environ)
    if length is None or not 0 < length <= lane.max_body:
        return None
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)  # for Django, if it answers after all
    validated = _VALIDATED.get(task_type.name, body)
    if validated is None:
        validated = _validate(task_type, body)
        if validated is None:
            return None  # Django answers with the parse or validation error
        _VALIDATED.put(task_type.name, body, validated)
    return validated


def _validate(task_type: TaskType, body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or any(field in data for field in WEBHOOK_FIELDS):
        return None  # a webhook subscription is DRF's (api/views.py), however its key is spelled
    if any(field in data for field in task_type.file_fields):
        return None  # a file is stored for its client, and an upload is checked against it: DRF's
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


def _waiting(environ, identity: ClientIdentity, call):
    """call(wait), held as one of the client's requests while it waits (`Prefer: wait`, as in
    api/request_options.py), and the wait applied. A request that asks for no wait takes no hold."""
    prefer = environ.get("HTTP_PREFER")
    wait = parse_wait(prefer) if prefer else None
    if not wait:
        return call(wait), wait
    with holding(identity.name, wait) as held:
        return call(held), held


@functools.lru_cache(maxsize=4096)
def _rate_limit(scope: str, client: str) -> jobs.RateLimit | None:
    """The client's allowance (api/throttling.py), parsed from its setting once per client."""
    return rate_limit(scope, {}, client=client)


@receiver(setting_changed)
def _forget_settings(**kwargs) -> None:
    lean_requests.lane_settings.cache_clear()
    lean_requests.security_headers.cache_clear()
    _rate_limit.cache_clear()
    lean_requests.ALLOWED_HOSTS_SEEN.clear()


def _answer_parts(
    task_type: TaskType, state: jobs.JobState, wait: int | None, environ, lane: lean_requests.LaneSettings
):
    base = lean_requests.base_url(environ, lane) if state.result else ""  # for a result's files' URLs
    code, body, headers = status_answer(task_type, state, base=base)
    return code, body, [*preference_applied(wait).items(), *headers.items()]


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # integers beyond 64 bits (factors of a 100-digit number)
        return json.dumps(body, separators=(",", ":")).encode()
