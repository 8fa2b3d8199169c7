"""Errors as JSON: a job-service outage is a 503, a missing job a 404, never a bare 500.

A Redis that refuses writes (full, read-only, failed persistence) is an outage too, answered
503 with its reason, e.g. {"detail": "the job queue is full; try again later"}.
"""

import functools

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from factorize_app.api.metrics import REFUSED_SUBMITS
from factorize_app.jobs import (
    FULL,
    ClientLimitExceeded,
    JobNotCancellable,
    JobNotFound,
    JobNotRetryable,
    QueueRefusesWrites,
    QueueUnavailable,
    SubmitRefused,
    Throttled,
    queue_error,
)

RETRY_AFTER_OUTAGE = "5"
# A full Redis makes room as results expire, or when an operator raises maxmemory: not in 5 s.
RETRY_AFTER_FULL = "30"
OUTAGE_DETAIL = "The job queue is unavailable; try again shortly."


def outage_body(exc: Exception) -> tuple[dict[str, str], dict[str, str]]:
    """The 503's body and headers for an outage or a write refusal (naming its reason)."""
    if isinstance(exc, QueueRefusesWrites):
        retry_after = RETRY_AFTER_FULL if exc.reason == FULL else RETRY_AFTER_OUTAGE
        return {"detail": exc.detail, "reason": exc.reason}, {"Retry-After": retry_after}
    if getattr(exc, "server", None):  # one of several Redis servers (TASK_REDIS_URLS): the others answer
        types = ", ".join(exc.task_types) or "clients, files and webhooks"
        detail = f"The job queue's Redis of {types} ({exc.server}) is unavailable; try again shortly."
        body = {"detail": detail, "redis": exc.server, "task_types": list(exc.task_types)}
        return body, {"Retry-After": RETRY_AFTER_OUTAGE}
    return {"detail": OUTAGE_DETAIL}, {"Retry-After": RETRY_AFTER_OUTAGE}


def outage_response(exc: Exception) -> JsonResponse:
    """For plain Django views (dashboard, admin) that hit Redis while it is down or refusing writes."""
    body, headers = outage_body(exc)
    response = JsonResponse(body, status=503)
    for name, value in headers.items():
        response[name] = value
    return response


def too_large_detail() -> str:
    return f"The request body is too large: at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."


def too_large_response() -> JsonResponse:
    """413 for a body over MAX_REQUEST_BYTES (Django's own answer would be a 400 HTML page)."""
    return JsonResponse({"detail": too_large_detail()}, status=413)


def too_many_parts_detail() -> str:
    return (
        f"Too many form fields or files: at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields and "
        f"{settings.DATA_UPLOAD_MAX_NUMBER_FILES} files."
    )


def exception_handler(exc, context):
    # Django's request limits, raised as DRF's parsers read the body; unhandled, Django would answer
    # them with its 400 HTML page.
    if isinstance(exc, RequestDataTooBig):
        return Response({"detail": too_large_detail()}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        return Response({"detail": too_many_parts_detail()}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, QueueUnavailable):
        if isinstance(exc, SubmitRefused):
            REFUSED_SUBMITS.labels(exc.reason).inc()
        body, headers = outage_body(exc)
        return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE, headers=headers)
    if isinstance(exc, JobNotFound):
        return Response({"detail": "No job with this id."}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, (JobNotCancellable, JobNotRetryable)):
        return Response({"detail": str(exc), "status": exc.status}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, ClientLimitExceeded):
        body = {"detail": str(exc), "limit": exc.limit, "max": exc.cap, **getattr(exc, "details", {})}
        headers = {"Retry-After": str(getattr(exc, "retry_after", 1))}  # a budget: when its oldest jobs expire
        return Response(body, status=status.HTTP_429_TOO_MANY_REQUESTS, headers=headers)
    if isinstance(exc, Throttled):  # a batch's items, counted after DRF's throttle let the request in
        exc = exceptions.Throttled(wait=exc.retry_after)
    return drf_exception_handler(exc, context)


def bad_request(request, exception=None):
    """Django's 400 (a SuspiciousOperation outside DRF, e.g. too many form fields), as JSON."""
    if isinstance(exception, RequestDataTooBig):
        return too_large_response()
    if isinstance(exception, (TooManyFieldsSent, TooManyFilesSent)):
        return JsonResponse({"detail": too_many_parts_detail()}, status=400)
    return JsonResponse({"detail": "Bad request."}, status=400)


def page_not_found(request, exception=None):
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request, *args, **kwargs):
    return JsonResponse({"detail": "Internal server error."}, status=500)


def csrf_failure(request, reason=""):
    """Django's CSRF refusal (a form post to a plain Django view), as JSON like every other error."""
    return JsonResponse({"detail": f"CSRF verification failed: {reason}"}, status=403)


def read_only(view):
    """A plain Django view that answers GET and HEAD; any other method gets 405 JSON (and no CSRF
    check: nothing is written)."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.method not in ("GET", "HEAD"):
            response = JsonResponse({"detail": f'Method "{request.method}" not allowed.'}, status=405)
            response["Allow"] = "GET, HEAD"
            return response
        return view(request, *args, **kwargs)

    return csrf_exempt(wrapper)


class RedisUnavailableMiddleware:
    """Turn a Redis outage or write refusal in any view (the django-rq dashboard too) into a 503
    JSON answer."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        error = queue_error(exception)
        return outage_response(error) if error is not None else None
