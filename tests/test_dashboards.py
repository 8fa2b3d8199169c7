"""The operators' dashboard (deploy/grafana) and alerting rules (deploy/prometheus) against what
/metrics really serves: every metric their PromQL names exists, with every label it matches or
groups by (and each exact value it asks for), once real workers have finished, failed and
delivered webhooks; and Prometheus's own promtool passes the rules, their unit tests and the
compose profile's configuration."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from rq.utils import utcparse

from factorize_app.tasks import get_task_type
from tests.conftest import ROOT, wait_until
from tests.test_webhooks import SECRET, Receiver, worker_env

DASHBOARD = ROOT / "deploy" / "grafana" / "factorize.json"
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
# Grafana's variables, as a query with every task type selected runs them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$queue": ".*"}


def dashboard_panels() -> list[dict]:
    panels = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels += [panel, *panel.get("panels", [])]  # a collapsed row holds its panels
    return panels


def expressions() -> dict[str, str]:
    """Every PromQL expression of the dashboard and the rules, by where it is."""
    found = {}
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found[f"panel {panel['title']!r} {target['refId']}"] = expr
    dashboard = json.loads(DASHBOARD.read_text())
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(metric, label): the metric, and the label
            metric, label = variable["definition"].removeprefix("label_values(").removesuffix(")").split(", ")
            found[f"variable {variable['name']}"] = f"count by ({label}) ({metric})"
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            found[f"rule {rule['alert']}"] = rule["expr"]
    return found


def test_the_dashboard_and_the_rules_cover_what_operators_watch():
    used = " ".join(expressions().values())
    for metric in (
        'factorize_queue_jobs{state="queued"',
        "factorize_queue_oldest_job_age_seconds",
        "factorize_job_duration_seconds_count",
        "factorize_job_duration_seconds_bucket",
        "factorize_queue_workers",
        "factorize_queue_max_workers",
        "factorize_redis_used_memory_bytes",
        "factorize_redis_memory_high_water_bytes",
        "factorize_webhook_deliveries_total",
        "factorize_webhook_pending_deliveries",
        "factorize_http_requests_total",
    ):
        assert metric in used, metric
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    assert {
        "FactorizeBacklogGrowingAtMaxWorkers",
        "FactorizeNoWorkerForQueuedJobs",
        "FactorizeRedisMemoryAboveHighWater",
        "FactorizeJobFailureRatioHigh",
        "FactorizeWebhookRetriesPilingUp",
    } <= alerts


def test_the_dashboard_is_one_grafana_can_import():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard_panels()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids are unique"
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"] and panel["description"], panel["title"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def served_samples(api, settings, receiver, start_worker) -> dict[str, list[dict[str, str]]]:
    """/metrics once a job has finished, one has failed, and a webhook was retried then delivered:
    each sample name with the label sets it is served with."""
    settings.WEBHOOK_SECRET = SECRET
    settings.WEBHOOK_ALLOWED_HOSTS = [f"127.0.0.1:{receiver.port}"]
    receiver.answers = [(500, 0, {})]  # the first attempt is retried
    start_worker("factorization", "failing")
    start_worker("webhooks", **worker_env(receiver))
    api.post("/factorize", {"number": 91, "webhook": receiver.url()}, format="json")
    api.post("/failing", {"tag": "dashboards"}, format="json")
    api.post("/primes", {"n": 10}, format="json")  # stays queued: no primes worker

    def counted() -> dict[str, list[dict[str, str]]] | None:
        samples = defaultdict(list)
        for family in text_string_to_metric_families(api.get("/metrics").content.decode()):
            for sample in family.samples:
                samples[sample.name].append(sample.labels)
        outcomes = {labels["outcome"] for labels in samples["factorize_webhook_deliveries_total"]}
        statuses = {labels["status"] for labels in samples["factorize_job_duration_seconds_count"]}
        return samples if {"retried", "delivered"} <= outcomes and {"finished", "failed"} <= statuses else None

    return wait_until(counted, timeout=60, interval=0.5, what="a finished and a failed job, a retried webhook")


def selectors(node) -> list:
    found = []
    promql_parser.walk(node, lambda n: found.append(n) if isinstance(n, promql_parser.VectorSelector) else None)
    return found


def grouping_problems(tree, served: dict[str, list[dict[str, str]]]) -> list[str]:
    """Labels a `sum by (...)` (or any aggregation by labels) groups by that its series lack."""
    aggregations = []
    promql_parser.walk(tree, lambda n: aggregations.append(n) if isinstance(n, promql_parser.AggregateExpr) else None)
    return [
        f"grouped by {label}, which {selector.name} lacks"
        for node in aggregations
        if node.modifier is not None and node.modifier.type == promql_parser.AggModifierType.By
        for selector in selectors(node.expr)
        for label in node.modifier.labels
        if not any(label in labels for labels in served.get(selector.name, []))
    ]


def test_every_metric_and_label_the_dashboard_and_rules_use_is_served(api, settings, receiver, start_worker):
    served = served_samples(api, settings, receiver, start_worker)
    problems = []
    for where, expr in expressions().items():
        tree = promql_parser.parse(expr)  # a syntax error fails here, naming the expression
        for selector in selectors(tree):
            label_sets = served.get(selector.name)
            if not label_sets:
                problems.append(f"{where}: {selector.name} is not served")
                continue
            for matcher in selector.matchers.matchers:
                values = {labels.get(matcher.name) for labels in label_sets} - {None}
                if not values:
                    problems.append(f"{where}: {selector.name} has no label {matcher.name}")
                elif matcher.op == promql_parser.MatchOp.Equal and matcher.value not in values:
                    problems.append(f"{where}: {selector.name}{{{matcher.name}={matcher.value!r}}}: only {values}")

        problems += [f"{where}: {problem}" for problem in grouping_problems(tree, served)]
    assert problems == []


def promtool(*args: str) -> None:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (scripts/ensure-promtool.sh installs it)")
    checked = subprocess.run([binary, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_checks_the_rules():
    promtool("check", "rules", RULES.name)


def test_the_rules_fire_on_their_conditions_and_only_then():
    """alerts.test.yml: each alert on series that should fire it, and beside ones that should not."""
    promtool("test", "rules", "alerts.test.yml")


def test_promtool_checks_the_compose_profiles_configuration():
    promtool("check", "config", "prometheus.yml")


def gauge(api, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(api.get("/metrics").content.decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    raise AssertionError(f"{name}{labels} is not served")


def test_the_oldest_queued_jobs_wait_is_served_until_a_worker_takes_it(api, redis_conn, start_worker):
    assert gauge(api, "factorize_queue_oldest_job_age_seconds", queue="primes") == 0
    first = api.post("/primes", {"n": 11}, format="json").json()["job_id"]
    api.post("/primes", {"n": 12}, format="json")  # newer: the first stays the oldest
    enqueued = utcparse(redis_conn.hget(f"rq:job:{first}", "enqueued_at").decode()).replace(tzinfo=UTC).timestamp()
    seconds, micros = redis_conn.time()
    served = gauge(api, "factorize_queue_oldest_job_age_seconds", queue="primes")
    waited = seconds + micros / 1e6 - enqueued
    assert served > 0 and abs(served - waited) < 1, (served, waited)
    assert gauge(api, "factorize_queue_max_workers", queue="primes") == get_task_type("primes").deployment.max_workers
    start_worker("primes")
    wait_until(lambda: gauge(api, "factorize_queue_jobs", queue="primes", state="queued") == 0, what="primes taken")
    assert gauge(api, "factorize_queue_oldest_job_age_seconds", queue="primes") == 0
