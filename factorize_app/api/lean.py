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
- RequestBodyLimitMiddleware (api/bodies.py): the lane reads at most MAX_BODY bytes, below MAX_REQUEST_BYTES.
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

import dataclasses
import functools
import io
import json
import logging
import time
from typing import Any

import orjson
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http.request import split_domain_port, validate_host
from rest_framework.exceptions import ValidationError

from factorize_app import jobs
from factorize_app.api import streams
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

MAX_BODY = 64 * 1024  # larger bodies (batches) go to DRF, which also enforces MAX_REQUEST_BYTES
_REASONS = {200: "200 OK", 202: "202 Accepted"}
JSON = "application/json"


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
        lane = _lane_settings()
        if lane.enabled and _event_stream_client(environ, lane):
            stream = self._stream(environ, lane, start_response)
            if stream is not None:
                return stream
        elif lane.enabled and _plain_api_client(environ, lane):
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
                    [*_response_headers(environ, lane), ("Content-Length", str(len(payload))), *headers],
                )
                latency, requests = _metrics(environ["REQUEST_METHOD"], route, status)
                latency.observe(time.perf_counter() - started)
                requests.inc()
                return [payload]
        return self.django_app(environ, start_response)

    def _answer(
        self, environ, identity: ClientIdentity, lane: _LaneSettings
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

    def _submit(self, environ, task_type: TaskType, identity: ClientIdentity, lane: _LaneSettings):
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
        limit = _rate_limit(SUBMIT, identity.name)

        def submit(wait: int | None) -> jobs.JobState:
            return jobs.submit(task_type=task_type, data=validated, wait=wait or 0, client=identity.name,
                               rate_limit=limit, limits=limits_of(identity))  # fmt: skip

        state, wait = _waiting(environ, identity, submit)
        return f"{task_type.name}-list", *_answer_parts(task_type, state, wait, environ, lane)

    def _status(self, environ, job_id: str, identity: ClientIdentity, lane: _LaneSettings):
        limit = _rate_limit(POLL, identity.name)

        def status(wait: int | None) -> jobs.JobState:
            return jobs.get_status(job_id=job_id, wait=wait or 0, rate_limit=limit, owner=reading_owner(identity))

        state, wait = _waiting(environ, identity, status)
        code, body, headers = _answer_parts(get_task_type(state.task_name), state, wait, environ, lane)
        return "job-detail", code, add_traceback(body, state, identity), headers

    def _stream(self, environ, lane: _LaneSettings, start_response):
        """`GET /jobs/<id>` as an event stream (api/streams.py): the same body, holds and caps as
        the stream view's, the request counted in the job's poll; anything else that view would
        answer (a 404, a 503, a 204 after the end, a bad Last-Event-ID) falls through to it."""
        path = environ.get("PATH_INFO", "")
        if environ["REQUEST_METHOD"] != "GET" or not path.startswith("/jobs/") or environ.get("QUERY_STRING"):
            return None
        started = time.perf_counter()
        try:
            identity = cached_identity(environ)
            if identity is None:
                return None
            after = jobs.valid_event_id(environ.get("HTTP_LAST_EVENT_ID"))
            stream = streams.stream_of(
                path.removeprefix("/jobs/").rstrip("/"), after, client=identity.name,
                owner=reading_owner(identity), rate_limit=_rate_limit(POLL, identity.name),
                base=_base_url(environ, lane),
            )  # fmt: skip
        except (ValueError, jobs.QueueUnavailable, jobs.JobNotFound, jobs.Throttled):
            return None  # Django answers these with the documented error bodies
        except Exception:  # a bug or a hostile input nothing else caught: Django answers and counts it
            logger.exception("lean lane: falling through to Django", extra={"path": path})
            return None
        if stream is None or stream is streams.NO_CONTENT:
            return None
        start_response("200 OK", [*_response_headers(environ, lane, streams.EVENT_STREAM), *streams.STREAM_HEADERS])
        latency, requests = _metrics("GET", "job-detail", 200)
        latency.observe(time.perf_counter() - started)
        requests.inc()
        return stream


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


@dataclasses.dataclass(frozen=True)
class _LaneSettings:
    """The settings every request of the lane reads, read once (and again when a test changes one)."""

    enabled: bool  # async mode: sync mode has no jobs to poll
    ssl_redirect: bool
    stands_aside: bool  # DISALLOWED_USER_AGENTS or PREPEND_WWW: CommonMiddleware acts on every request
    forwarded_host: bool
    allowed_hosts: tuple[str, ...]
    proxy_ssl_header: tuple[str, str] | None
    max_body: int
    headers: tuple[tuple[str, str], ...]  # what the middleware and DRF add to every answer
    hsts: tuple[tuple[str, str], ...]  # what SecurityMiddleware adds over https


@functools.cache
def _lane_settings() -> _LaneSettings:
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return _LaneSettings(
        enabled=settings.EXECUTION_MODE == "async",
        ssl_redirect=bool(settings.SECURE_SSL_REDIRECT),
        stands_aside=bool(settings.DISALLOWED_USER_AGENTS or settings.PREPEND_WWW),
        forwarded_host=bool(settings.USE_X_FORWARDED_HOST),
        allowed_hosts=tuple(allowed),
        proxy_ssl_header=settings.SECURE_PROXY_SSL_HEADER or None,
        max_body=min(MAX_BODY, settings.DATA_UPLOAD_MAX_MEMORY_SIZE or MAX_BODY),
        headers=(*_security_headers(), ("Vary", "Accept")),
        hsts=(("Strict-Transport-Security", _hsts_value()),) if settings.SECURE_HSTS_SECONDS else (),
    )


_ALLOWED_HOSTS_SEEN: dict[str, bool] = {}  # host -> allowed, bounded: cleared past 256 hosts


@receiver(setting_changed)
def _forget_settings(**kwargs) -> None:
    _lane_settings.cache_clear()
    _security_headers.cache_clear()
    _rate_limit.cache_clear()
    _ALLOWED_HOSTS_SEEN.clear()


def _plain_api_client(environ, lane: _LaneSettings) -> bool:
    accept = environ.get("HTTP_ACCEPT", "*/*")
    return (
        "text/html" not in accept
        and "event-stream" not in accept  # a live event stream: `_stream`, or the stream view
        and ("json" in accept or "*/*" in accept)
        and _api_client(environ, lane)
    )


def _event_stream_client(environ, lane: _LaneSettings) -> bool:
    """An API client asking for a job's event stream, and only for that (any other Accept is
    negotiated by DRF)."""
    return environ.get("HTTP_ACCEPT", "").strip() == streams.EVENT_STREAM and _api_client(environ, lane)


def _api_client(environ, lane: _LaneSettings) -> bool:
    return (
        "HTTP_COOKIE" not in environ
        and "HTTP_CANCEL_AFTER" not in environ  # a deadline for the job: DRF reads it
        and (not lane.ssl_redirect or _is_secure(environ, lane))  # else Django redirects it
        and not lane.stands_aside
        and _allowed_host(environ, lane)
    )


def _allowed_host(environ, lane: _LaneSettings) -> bool:
    """Django's HttpRequest.get_host() check, on the same host it would read."""
    host = _host(environ, lane)
    allowed = _ALLOWED_HOSTS_SEEN.get(host)
    if allowed is None:
        domain, _port = split_domain_port(host)
        allowed = bool(domain) and validate_host(domain, lane.allowed_hosts)
        if len(_ALLOWED_HOSTS_SEEN) >= 256:
            _ALLOWED_HOSTS_SEEN.clear()
        _ALLOWED_HOSTS_SEEN[host] = allowed
    return allowed


def _host(environ, lane: _LaneSettings) -> str:
    """The host Django's HttpRequest.get_host() reads (checked by _allowed_host)."""
    if lane.forwarded_host and "HTTP_X_FORWARDED_HOST" in environ:
        return environ["HTTP_X_FORWARDED_HOST"]
    if "HTTP_HOST" in environ:
        return environ["HTTP_HOST"]
    host = environ.get("SERVER_NAME", "")
    port = environ.get("SERVER_PORT", "")
    if port != ("443" if environ.get("wsgi.url_scheme") == "https" else "80"):
        host = f"{host}:{port}"
    return host


def _base_url(environ, lane: _LaneSettings) -> str:
    """responses.base_url() of the request: Django's request.scheme and get_host()."""
    return f"{'https' if _is_secure(environ, lane) else 'http'}://{_host(environ, lane)}"


def _response_headers(environ, lane: _LaneSettings, content_type: str = JSON) -> tuple[tuple[str, str], ...]:
    """The headers Django's middleware and DRF add to these answers (see the module docstring)."""
    headers = lane.headers
    if content_type != JSON:  # lane.headers starts with JSON's
        headers = (("Content-Type", content_type), *headers[1:])
    if lane.hsts and _is_secure(environ, lane):
        return headers + lane.hsts
    return headers


@functools.cache
def _security_headers() -> tuple[tuple[str, str], ...]:
    headers = [("Content-Type", JSON)]
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        headers.append(("Referrer-Policy", policy if isinstance(policy, str) else ",".join(policy)))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    headers.append(("X-Frame-Options", getattr(settings, "X_FRAME_OPTIONS", "DENY").upper()))
    return tuple(headers)


def _hsts_value() -> str:
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return value


def _is_secure(environ, lane: _LaneSettings) -> bool:
    """Django's request.is_secure(): the trusted proxy's header when it is present, else the scheme."""
    if lane.proxy_ssl_header:
        header, secure_value = lane.proxy_ssl_header
        value = environ.get(header)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return environ.get("wsgi.url_scheme") == "https"


def _answer_parts(task_type: TaskType, state: jobs.JobState, wait: int | None, environ, lane: _LaneSettings):
    base = _base_url(environ, lane) if state.result else ""  # for a result's files' URLs
    code, body, headers = status_answer(task_type, state, base=base)
    return code, body, [*preference_applied(wait).items(), *headers.items()]


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # integers beyond 64 bits (factors of a 100-digit number)
        return json.dumps(body, separators=(",", ":")).encode()
