"""The compose profile `prometheus` on a real engine (`make test-docker`): Prometheus (the official
image, or the stand-in scripts/docker-offline-images.sh builds from Debian's package) starts with
the alerting rules of deploy/prometheus loaded, scrapes the web service's /metrics, and evaluates
the rules over what it scraped: a job queued with no worker makes FactorizeNoWorkerForQueuedJobs
pending."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import ROOT, free_port, wait_until

pytestmark = pytest.mark.docker

COMPOSE_BIN = str(Path(sys.executable).parent / "docker-compose")
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"


class PrometheusProject:
    """A compose project of its own: Redis, the web service and Prometheus, no worker."""

    def __init__(self) -> None:
        self.name = f"factorize-prometheus-{os.getpid()}"
        web_port, prometheus_port = free_port(), free_port()
        self.web = f"http://127.0.0.1:{web_port}"
        self.prometheus = f"http://127.0.0.1:{prometheus_port}"
        self.env = {
            **os.environ,
            "COMPOSE_BAKE": "false",
            "WEB_PORT": str(web_port),
            "PROMETHEUS_PORT": str(prometheus_port),
        }
        self.env.pop("SECRET_KEY", None)

    def __call__(self, *args: str, check: bool = True, timeout: float = 900) -> str:
        files = ["-f", "docker-compose.yml", "-f", "tests/docker/compose.offline.yml"]
        result = subprocess.run(
            [COMPOSE_BIN, "-p", self.name, *files, "--profile", "prometheus", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and result.returncode != 0:
            pytest.fail(f"docker compose {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def api(self, path: str, **params: str) -> object:
        answer = requests.get(f"{self.prometheus}/api/v1/{path}", params=params, timeout=10)
        answer.raise_for_status()
        return answer.json()["data"]


@pytest.fixture(scope="module")
def project() -> Iterator[PrometheusProject]:
    project = PrometheusProject()
    try:
        project("build", "web")
        project("up", "-d", "--wait", "web", "prometheus")
        wait_until(lambda: _answers(f"{project.prometheus}/-/ready"), timeout=120, what="Prometheus ready")
        yield project
    finally:
        print(project("logs", "prometheus", check=False)[-3000:])
        project("down", "-v", "--remove-orphans", check=False)
        subprocess.run(["docker", "image", "rm", f"{project.name}-app"], capture_output=True)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).ok
    except requests.RequestException:
        return False


def test_prometheus_loads_every_alerting_rule(project):
    expected = [rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    (group,) = project.api("rules")["groups"]
    assert [rule["name"] for rule in group["rules"]] == expected
    assert group["file"] == "/etc/prometheus/alerts.yml"


def test_prometheus_scrapes_the_web_services_metrics(project):
    def target():
        targets = project.api("targets")["activeTargets"]  # empty until the scrape pool has started
        if not targets:
            return None
        (active,) = targets
        return active if active["health"] == "up" else None

    active = wait_until(target, timeout=120, interval=1, what="the web service's scrape to succeed")
    assert active["labels"]["job"] == "factorize" and active["scrapeUrl"].endswith("/metrics")
    served = project.api("query", query="factorize_queue_max_workers")["result"]
    assert {"factorization", "primes"} <= {series["metric"]["queue"] for series in served}


def test_the_rules_evaluate_over_what_is_scraped(project):
    """No worker runs in this project: a job queued makes the no-worker alert pending (it fires
    only after its 10 minutes), and the rules evaluate without errors."""
    assert requests.post(f"{project.web}/factorize", json={"number": 408216}, timeout=10).status_code == 202

    def pending():
        alerts = project.api("alerts")["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "FactorizeNoWorkerForQueuedJobs"] or None

    (alert,) = wait_until(pending, timeout=120, interval=1, what="the no-worker alert to be pending")
    assert alert["state"] == "pending" and alert["labels"]["queue"] == "factorization"
    (group,) = project.api("rules")["groups"]
    assert {rule["health"] for rule in group["rules"]} == {"ok"}, group["rules"]
