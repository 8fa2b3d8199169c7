"""Health endpoints for container and load-balancer probes: plain Django views, no DRF."""

from django.conf import settings
from django.http import JsonResponse

from factorize_app import jobs
from factorize_app.api.shutdown import draining
from factorize_app.tasks import task_types


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
    process out of rotation would turn a refusal of new jobs into a full outage. So is a task type
    whose workers' model setup fails (`setup_errors`, by type): its jobs wait, the others' run;
    and a task type whose own Redis (TASK_REDIS_URLS) does not answer or refuses writes
    (`unavailable`, by type): its requests answer 503, the others' answer.
    """
    if draining():
        return JsonResponse({"status": "draining", "detail": "This server is stopping."}, status=503)
    if settings.EXECUTION_MODE != "async":
        return JsonResponse({"status": "ok"})
    try:
        refusal = jobs.probe(timeout=READY_TIMEOUT)
        failures = jobs.setup_failures()
        away = jobs.probe_task_servers(timeout=READY_TIMEOUT)
    except jobs.QueueUnavailable as exc:
        return JsonResponse({"status": "unavailable", "detail": str(exc)}, status=503)
    body: dict = {"status": "ok"}
    details = []
    if refusal is not None:
        details.append(jobs.REFUSAL_DETAILS[refusal])
        body = {"status": "degraded", "writes": "refused", "reason": refusal}
    failing = {t.name: jobs.setup_error(failures[t.name]) for t in task_types() if t.name in failures}
    if failing:
        details.append(f"the model setup of {', '.join(failing)} fails: its jobs wait until a worker starts")
        body = {**body, "status": "degraded", "setup_errors": failing}
    if away:
        details.append(f"the Redis of {', '.join(sorted(away))} (TASK_REDIS_URLS) is unavailable or refuses writes")
        body = {**body, "status": "degraded", "unavailable": away}
    if details:
        body["detail"] = "; ".join(details)
    return JsonResponse(body)
