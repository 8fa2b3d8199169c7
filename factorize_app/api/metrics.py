"""Prometheus metrics at /metrics: queue gauges and job durations read live from Redis at scrape
time (a few commands per task type, no keyspace scans), request counts and latencies per route.
The operators' dashboard (deploy/grafana) and alerting rules (deploy/prometheus) are built on
these names; tests/test_dashboards.py checks that each one they use is served.

Under gunicorn the request metrics of every worker process are merged through
prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set up in gunicorn_conf.py).
"""

from __future__ import annotations

import os
import time

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from factorize_app import jobs
from factorize_app.jobs.monitoring import oldest_queued_ages
from factorize_app.tasks import task_types
from factorize_app.webhooks import deliveries as webhook_deliveries

REQUESTS = Counter("factorize_http_requests_total", "HTTP requests answered.", ["method", "route", "status"])
LATENCY = Histogram(
    "factorize_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
REFUSED_SUBMITS = Counter(
    "factorize_refused_submits_total",
    "Submits of new jobs answered 503 because Redis refused writes or passed its memory high-water mark.",
    ["reason"],
)
for _reason in jobs.REFUSAL_DETAILS:  # served from 0, so that rate() counts the first refusal of each
    REFUSED_SUBMITS.labels(_reason)


class QueueCollector:
    """Per task type: jobs by state, the oldest queued job's wait, live workers and the most its
    deployment scales to; job durations; webhook deliveries; whether Redis answers; Redis memory
    against its maxmemory and the high-water mark past which new jobs are refused."""

    def collect(self):
        up = GaugeMetricFamily("factorize_redis_up", "1 if the job queue's Redis answered this scrape.")
        try:
            down = jobs.unreachable_types()  # on a Redis of their own (TASK_REDIS_URLS) that is down: left out
            stats = jobs.queue_stats(skip=down)
            durations = jobs.job_durations(skip=down)
            used_memory, maxmemory = jobs.redis_memory()
            webhook_counts = webhook_deliveries.delivery_counts()
            webhooks_pending = webhook_deliveries.pending_count()
            ages = oldest_queued_ages(skip=down)
        except jobs.QueueUnavailable:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        queue_up = GaugeMetricFamily(
            "factorize_queue_redis_up", "1 if the Redis of a task type's queue answered this scrape.", labels=["queue"]
        )
        for task_type in task_types():
            queue_up.add_metric([task_type.name], 0 if task_type.name in down else 1)
        yield queue_up
        yield GaugeMetricFamily("factorize_redis_used_memory_bytes", "Redis used_memory.", value=used_memory)
        yield GaugeMetricFamily(
            "factorize_redis_maxmemory_bytes", "Redis maxmemory (0: unlimited, no high-water mark).", value=maxmemory
        )
        yield GaugeMetricFamily(
            "factorize_redis_memory_high_water_bytes",
            "Used memory past which new jobs are refused: REDIS_MEMORY_HIGH_WATER of maxmemory (0: no mark).",
            value=settings.REDIS_MEMORY_HIGH_WATER * maxmemory,
        )

        queue_jobs = GaugeMetricFamily(
            "factorize_queue_jobs", "Jobs of a task type by state.", labels=["queue", "state"]
        )
        oldest = GaugeMetricFamily(
            "factorize_queue_oldest_job_age_seconds",
            "Seconds the oldest queued job of a type has waited since it was enqueued (0: none queued).",
            labels=["queue"],
        )
        workers = GaugeMetricFamily("factorize_queue_workers", "Live workers listening to a queue.", labels=["queue"])
        for entry in stats:
            for state in ("queued", "started", "finished", "failed", "canceled", "aborted"):
                queue_jobs.add_metric([entry["name"], state], entry[state])
            oldest.add_metric([entry["name"]], ages.get(entry["name"], 0.0))
            workers.add_metric([entry["name"]], entry["workers"])
        yield queue_jobs
        yield oldest
        yield workers
        yield _max_workers()

        histogram = HistogramMetricFamily(
            "factorize_job_duration_seconds",
            "Run time of jobs, by task type and outcome.",
            labels=["task_type", "status"],
        )
        for (task_name, status), fields in sorted(durations.items()):
            cumulative, buckets = 0.0, []
            for bound in [*map(str, jobs.DURATION_BUCKETS), "+Inf"]:
                cumulative += fields.get(bound, 0.0)
                buckets.append((bound, cumulative))
            histogram.add_metric([task_name, status], buckets, sum_value=fields.get("sum", 0.0))
        yield histogram

        deliveries = CounterMetricFamily(
            "factorize_webhook_deliveries",
            "Webhook delivery attempts by event and outcome: delivered, retried (another attempt is due), failed.",
            labels=["event", "outcome"],
        )
        for (event, outcome), count in sorted(webhook_counts.items()):
            deliveries.add_metric([event, outcome], count)
        yield deliveries
        yield GaugeMetricFamily(
            "factorize_webhook_pending_deliveries",
            "Webhook deliveries not yet delivered or given up: queued, under way, or waiting to retry.",
            value=webhooks_pending,
        )


def _max_workers() -> GaugeMetricFamily:
    """The most workers each type's deployment scales to (TaskType.deployment.max_workers, KEDA's
    maxReplicaCount): a backlog that grows with its workers at this number needs more room."""
    family = GaugeMetricFamily(
        "factorize_queue_max_workers", "The most workers a task type's deployment scales to.", labels=["queue"]
    )
    for task_type in task_types():
        family.add_metric([task_type.name], task_type.deployment.max_workers)
    return family


def _registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return registry


# django-rq times its own collector (served at /django-rq/metrics/) with a Summary it names
# `rq_request_processing_seconds_total`, created at import in the default registry, so it is in
# every scrape of ours (in multiprocess mode through its files). Only counters may end in `_total`
# (`promtool check metrics` refuses it): it is served under the name it should have.
RENAMED = {"rq_request_processing_seconds_total": "rq_request_processing_seconds"}


class _Renaming:
    """A registry's metric families, those in RENAMED (unless counters) under their new names."""

    def __init__(self, registry) -> None:
        self.registry = registry

    def collect(self):
        for family in self.registry.collect():
            new = RENAMED.get(family.name)
            if new is not None and family.type != "counter":
                renamed = Metric(new, family.documentation, family.type, family.unit)
                renamed.samples = [
                    sample._replace(name=new + sample.name.removeprefix(family.name)) for sample in family.samples
                ]
                family = renamed
            yield family


def metrics_view(request) -> HttpResponse:
    if settings.METRICS_REQUIRE_API_KEY:
        from factorize_app.api.identity.authentication import key_or_staff_refusal

        refusal = key_or_staff_refusal(request)
        if refusal is not None:
            return refusal
    registry = _registry()
    collector = QueueCollector()
    registry.register(collector)
    try:
        return HttpResponse(generate_latest(_Renaming(registry)), content_type=CONTENT_TYPE_LATEST)
    finally:
        registry.unregister(collector)


class RequestMetricsMiddleware:
    """Count and time every request by its route name (bounded label values, unlike raw paths)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = request.resolver_match
        route = match.view_name if match else "unmatched"
        method = request.method if request.method in _METHODS else "other"  # any token is a valid method
        LATENCY.labels(method, route).observe(time.perf_counter() - started)
        REQUESTS.labels(method, route, str(response.status_code)).inc()
        return response


# Label values must be bounded: a series per distinct method a client invents would grow without end.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
