"""Health endpoints for container and load-balancer probes: plain Django views, no DRF."""

from django.conf import settings
from django.http import JsonResponse

from factorize_app import jobs
from factorize_app.api.shutdown import draining


def healthz(request) -> JsonResponse:
    """The process is up and serving; depends on nothing."""
    return JsonResponse({"status": "ok"})


# A probe's own bound: answered within this, whatever REDIS_SOCKET_TIMEOUT or a slow name lookup.
READY_TIMEOUT = 1.0


def readyz(request) -> JsonResponse:
    """Ready for traffic: the job queue's Redis answers (sync mode needs no Redis), within 1 s;
    not while the process is stopping (503 "draining": a load balancer takes it out of rotation).

    A Redis that answers but refuses writes (full, read-only, failed persistence) is reported as
    "degraded" with its reason, still 200: polls of existing jobs answer, so taking every web
    process out of rotation would turn a refusal of new jobs into a full outage.
    """
    if draining():
        return JsonResponse({"status": "draining", "detail": "This server is stopping."}, status=503)
    if settings.EXECUTION_MODE == "async":
        try:
            refusal = jobs.probe(timeout=READY_TIMEOUT)
        except jobs.QueueUnavailable as exc:
            return JsonResponse({"status": "unavailable", "detail": str(exc)}, status=503)
        if refusal is not None:
            detail = jobs.REFUSAL_DETAILS[refusal]
            return JsonResponse({"status": "degraded", "writes": "refused", "reason": refusal, "detail": detail})
    return JsonResponse({"status": "ok"})
