"""Errors as JSON: a job-service outage is a 503, a missing job a 404, never a bare 500."""

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import JsonResponse
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from factorize_app.jobs import JobNotCancellable, JobNotFound, QueueUnavailable

RETRY_AFTER_OUTAGE = "5"
OUTAGE_DETAIL = "The job queue is unavailable; try again shortly."


def outage_response(exc: Exception) -> JsonResponse:
    """For plain Django views (dashboard, admin) that hit Redis while it is down."""
    response = JsonResponse({"detail": OUTAGE_DETAIL}, status=503)
    response["Retry-After"] = RETRY_AFTER_OUTAGE
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
        return Response(
            {"detail": OUTAGE_DETAIL},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": RETRY_AFTER_OUTAGE},
        )
    if isinstance(exc, JobNotFound):
        return Response({"detail": "No job with this id."}, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, JobNotCancellable):
        return Response({"detail": str(exc), "status": exc.status}, status=status.HTTP_409_CONFLICT)
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
