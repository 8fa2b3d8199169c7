"""Prometheus metrics at /metrics: queue gauges and job durations read live from Redis at scrape
time (a few commands per task type, no keyspace scans), request counts and latencies per route.

Under gunicorn the request metrics of every worker process are merged through
prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set up in gunicorn_conf.py).
"""

from __future__ import annotations

import os
import time

from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from factorize_app import jobs
from factorize_app.webhooks.deliveries import delivery_counts as webhook_delivery_counts

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


class QueueCollector:
    """Per task type: jobs by state and live workers; job durations; whether Redis answers; Redis
    memory against its maxmemory (the room left for results)."""

    def collect(self):
        up = GaugeMetricFamily("factorize_redis_up", "1 if the job queue's Redis answered this scrape.")
        try:
            stats = jobs.queue_stats()
            durations = jobs.job_durations()
            used_memory, maxmemory = jobs.redis_memory()
            webhook_counts = webhook_delivery_counts()
        except jobs.QueueUnavailable:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily("factorize_redis_used_memory_bytes", "Redis used_memory.", value=used_memory)
        yield GaugeMetricFamily(
            "factorize_redis_maxmemory_bytes", "Redis maxmemory (0: unlimited, no high-water mark).", value=maxmemory
        )

        queue_jobs = GaugeMetricFamily(
            "factorize_queue_jobs", "Jobs of a task type by state.", labels=["queue", "state"]
        )
        workers = GaugeMetricFamily("factorize_queue_workers", "Live workers listening to a queue.", labels=["queue"])
        for entry in stats:
            for state in ("queued", "started", "finished", "failed", "canceled", "aborted"):
                queue_jobs.add_metric([entry["name"], state], entry[state])
            workers.add_metric([entry["name"]], entry["workers"])
        yield queue_jobs
        yield workers

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
    from django.conf import settings

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
