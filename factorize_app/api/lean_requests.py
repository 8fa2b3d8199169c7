"""The lean lane's reading of a WSGI request: which requests it may answer (an API client's, on an
allowed host, with nothing Django's middleware would act on), and what Django would put in the
answer's headers and URLs. The settings each request reads are read once (`lane_settings`)."""

from __future__ import annotations

import dataclasses
import functools

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from factorize_app.api import streams

MAX_BODY = 64 * 1024  # larger bodies (batches) go to DRF, which also enforces MAX_REQUEST_BYTES
JSON = "application/json"


@dataclasses.dataclass(frozen=True)
class LaneSettings:
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
def lane_settings() -> LaneSettings:
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return LaneSettings(
        enabled=settings.EXECUTION_MODE == "async",
        ssl_redirect=bool(settings.SECURE_SSL_REDIRECT),
        stands_aside=bool(settings.DISALLOWED_USER_AGENTS or settings.PREPEND_WWW),
        forwarded_host=bool(settings.USE_X_FORWARDED_HOST),
        allowed_hosts=tuple(allowed),
        proxy_ssl_header=settings.SECURE_PROXY_SSL_HEADER or None,
        max_body=min(MAX_BODY, settings.DATA_UPLOAD_MAX_MEMORY_SIZE or MAX_BODY),
        headers=(*security_headers(), ("Vary", "Accept")),
        hsts=(("Strict-Transport-Security", hsts_value()),) if settings.SECURE_HSTS_SECONDS else (),
    )


ALLOWED_HOSTS_SEEN: dict[str, bool] = {}  # host -> allowed, bounded: cleared past 256 hosts


def plain_api_client(environ, lane: LaneSettings) -> bool:
    accept = environ.get("HTTP_ACCEPT", "*/*")
    return (
        "text/html" not in accept
        and "event-stream" not in accept  # a live event stream: `_stream`, or the stream view
        and ("json" in accept or "*/*" in accept)
        and api_client(environ, lane)
    )


def event_stream_client(environ, lane: LaneSettings) -> bool:
    """An API client asking for a job's event stream, and only for that (any other Accept is
    negotiated by DRF)."""
    return environ.get("HTTP_ACCEPT", "").strip() == streams.EVENT_STREAM and api_client(environ, lane)


def api_client(environ, lane: LaneSettings) -> bool:
    return (
        "HTTP_COOKIE" not in environ
        and "HTTP_CANCEL_AFTER" not in environ  # a deadline for the job: DRF reads it
        and (not lane.ssl_redirect or is_secure(environ, lane))  # else Django redirects it
        and not lane.stands_aside
        and allowed_host(environ, lane)
    )


def allowed_host(environ, lane: LaneSettings) -> bool:
    """Django's HttpRequest.get_host() check, on the same host it would read."""
    host = request_host(environ, lane)
    allowed = ALLOWED_HOSTS_SEEN.get(host)
    if allowed is None:
        domain, _port = split_domain_port(host)
        allowed = bool(domain) and validate_host(domain, lane.allowed_hosts)
        if len(ALLOWED_HOSTS_SEEN) >= 256:
            ALLOWED_HOSTS_SEEN.clear()
        ALLOWED_HOSTS_SEEN[host] = allowed
    return allowed


def request_host(environ, lane: LaneSettings) -> str:
    """The host Django's HttpRequest.get_host() reads (checked by allowed_host)."""
    if lane.forwarded_host and "HTTP_X_FORWARDED_HOST" in environ:
        return environ["HTTP_X_FORWARDED_HOST"]
    if "HTTP_HOST" in environ:
        return environ["HTTP_HOST"]
    host = environ.get("SERVER_NAME", "")
    port = environ.get("SERVER_PORT", "")
    if port != ("443" if environ.get("wsgi.url_scheme") == "https" else "80"):
        host = f"{host}:{port}"
    return host


def base_url(environ, lane: LaneSettings) -> str:
    """responses.base_url() of the request: Django's request.scheme and get_host()."""
    return f"{'https' if is_secure(environ, lane) else 'http'}://{request_host(environ, lane)}"


def response_headers(environ, lane: LaneSettings, content_type: str = JSON) -> tuple[tuple[str, str], ...]:
    """The headers Django's middleware and DRF add to these answers (see the module docstring)."""
    headers = lane.headers
    if content_type != JSON:  # lane.headers starts with JSON's
        headers = (("Content-Type", content_type), *headers[1:])
    if lane.hsts and is_secure(environ, lane):
        return headers + lane.hsts
    return headers


@functools.cache
def security_headers() -> tuple[tuple[str, str], ...]:
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


def hsts_value() -> str:
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return value


def is_secure(environ, lane: LaneSettings) -> bool:
    """Django's request.is_secure(): the trusted proxy's header when it is present, else the scheme."""
    if lane.proxy_ssl_header:
        header, secure_value = lane.proxy_ssl_header
        value = environ.get(header)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return environ.get("wsgi.url_scheme") == "https"
