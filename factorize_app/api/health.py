"""Health endpoints for container and load-balancer probes: plain Django views, no DRF."""

from django.conf import settings
from django.http import JsonResponse

from factorize_app import jobs


def healthz(request) -> JsonResponse:
    """The process is up and serving; depends on nothing."""
    return JsonResponse({"status": "ok"})


def readyz(request) -> JsonResponse:
    """Ready for traffic: the job queue's Redis answers (sync mode needs no Redis)."""
    if settings.EXECUTION_MODE == "async":
        try:
            jobs.ping()
        except jobs.QueueUnavailable as exc:
            return JsonResponse({"status": "unavailable", "detail": str(exc)}, status=503)
    return JsonResponse({"status": "ok"})
