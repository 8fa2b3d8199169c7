"""Errors as JSON: a job-service outage is a 503, a missing job a 404, never a bare 500."""

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


def exception_handler(exc, context):
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


def page_not_found(request, exception=None):
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request, *args, **kwargs):
    return JsonResponse({"detail": "Internal server error."}, status=500)
