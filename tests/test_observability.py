"""Seeing the service: OpenAPI schema and docs, health, Prometheus metrics, structured worker logs."""

import json
import re
import subprocess

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from rest_framework import serializers

from factorize_app.tasks import task_types
from tests.conftest import PYTHON, ROOT, dead_redis_url, service_env, wait_done, wait_until, web_server


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def queue_gauge(samples, queue: str, state: str) -> float:
    return samples[("factorize_queue_jobs", (("queue", queue), ("state", state)))]


def test_schema_validates_without_warnings():
    result = subprocess.run(
        [PYTHON, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null"],
        cwd=ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_schema_documents_every_operation_with_its_shapes(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for task_type in task_types():
        post = paths[f"/{task_type.path}"]["post"]
        request_ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert request_ref.endswith(task_type.input_serializer.__name__.removesuffix("Serializer"))
        assert set(post["responses"]) == {"200", "202", "400", "401", "429", "503"}
        assert set(post["responses"]["202"]["headers"]) == {"Location", "Retry-After", "Preference-Applied"}
        assert set(post["responses"]["200"]["headers"]) == {"Preference-Applied"}
        assert "Prefer" in {p["name"] for p in post["parameters"]}
        status = schema["components"]["schemas"][
            post["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
        ]
        expected = {
            "done", *task_type.input_fields, *task_type.result_fields, "load", "job_id", "status", "error", "progress"
        }
        assert set(status["properties"]) == expected | {"traceback"}  # failed jobs, for staff and owners
        assert "traceback" not in status["required"]
        batch = paths[f"/{task_type.path}/batch"]["post"]
        assert set(batch["responses"]) == {"200", "400", "401", "429", "503"}
        components = schema["components"]["schemas"]
        answer = components[batch["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]]
        item = components[answer["properties"]["results"]["items"]["$ref"].split("/")[-1]]
        assert len(item["oneOf"]) == 2  # the status body, or an invalid item's errors
    assert set(paths["/jobs/{id}"]) == {"get", "delete"}
    assert set(paths["/jobs/{id}"]["get"]["responses"]) == {"200", "202", "401", "404", "429", "503"}
    assert set(paths["/jobs/{id}"]["delete"]["responses"]) == {"202", "204", "401", "404", "409", "429", "503"}
    assert set(paths["/jobs/{id}/retry"]["post"]["responses"]) == {"200", "202", "401", "404", "409", "429", "503"}
    assert paths["/queues"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    number = schema["components"]["schemas"]["FactorizationInput"]["properties"]["number"]
    assert {option["type"] for option in number["oneOf"]} == {"integer", "string"}


def test_docs_page_is_served_from_local_static_files(api):
    page = api.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    assert assets and all(asset.startswith("/static/") for asset in assets), assets
    for asset in assets:
        assert api.get(asset).status_code == 200, asset


def test_healthz_depends_on_nothing_and_readyz_on_redis(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ok"}
    with web_server(dead_redis_url()) as url:
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        ready = requests.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable" and "unavailable" in ready.json()["detail"]
        metrics = scrape(url)
        assert metrics[("factorize_redis_up", ())] == 0


def test_metrics_show_queue_gauges_moving_job_durations_and_requests(live_url, start_worker):
    for n in (101, 102, 103):
        requests.post(f"{live_url}/factorize", json={"number": n}, timeout=10)
    before = scrape(live_url)
    assert queue_gauge(before, "factorization", "queued") == 3
    assert before[("factorize_queue_workers", (("queue", "factorization"),))] == 0
    assert before[("factorize_redis_up", ())] == 1

    start_worker("factorization")
    for n in (101, 102, 103):
        wait_until(lambda n=n: requests.post(f"{live_url}/factorize", json={"number": n}, timeout=10).json()["done"])
    after = scrape(live_url)
    assert queue_gauge(after, "factorization", "queued") == 0
    assert queue_gauge(after, "factorization", "finished") == 3
    assert after[("factorize_queue_workers", (("queue", "factorization"),))] == 1
    count = after[("factorize_job_duration_seconds_count", (("status", "finished"), ("task_type", "factorization")))]
    assert count == 3
    posts_202 = (
        "factorize_http_requests_total",
        (("method", "POST"), ("route", "factorization-list"), ("status", "202")),
    )
    assert after[posts_202] >= 3
    assert any(name == "factorize_http_request_duration_seconds_bucket" for name, _ in after)


def _json_events(log: str) -> list[dict]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def test_worker_logs_a_json_line_per_batch_and_per_failed_job(api, start_worker):
    worker = start_worker("failing", "factorization")
    ok = wait_done(api, number=360)
    bad = wait_done(api, "/failing", tag="x")
    wait_until(lambda: len([e for e in _json_events(worker.log) if e["message"] == "batch done"]) >= 2)
    events = _json_events(worker.log)
    batches = [e for e in events if e["message"] == "batch done"]
    assert {(e["task_type"], e["jobs"], e["failed"]) for e in batches} == {("factorization", 1, 0), ("failing", 1, 1)}
    assert all(e["duration_s"] >= 0 for e in batches)
    (failure,) = [e for e in events if e.get("job_id") == bad["job_id"]]
    assert failure["message"] == "job failed" and failure["level"] == "WARNING"
    assert failure["error"] == bad["error"] == "ValueError: cannot handle x"
    assert not [e for e in events if e.get("job_id") == ok["job_id"]]  # finished jobs: per batch only


def test_with_debug_logging_the_worker_logs_every_finished_job(api, start_worker):
    worker = start_worker("factorization", LOG_LEVEL="DEBUG")
    ok = wait_done(api, number=360)
    wait_until(lambda: any(e.get("job_id") == ok["job_id"] for e in _json_events(worker.log)))
    (event,) = [e for e in _json_events(worker.log) if e.get("job_id") == ok["job_id"]]
    assert event["message"] == "job finished" and event["task_type"] == "factorization" and event["duration_s"] >= 0


@pytest.mark.parametrize("task_type", task_types(), ids=lambda t: t.name)
def test_browsable_api_has_a_form_for_each_task_type(api, task_type):
    """A field per input, or, for inputs HTML forms cannot hold (a list of 64 pixels), DRF's raw
    JSON form, prefilled."""
    page = api.get(f"/{task_type.path}", HTTP_ACCEPT="text/html").content.decode()
    fields = task_type.input_serializer().fields
    for field in task_type.input_fields:
        if isinstance(fields[field], serializers.ListField):
            assert 'name="_content"' in page
        else:
            assert f'name="{field}"' in page


def test_submitting_the_html_form_answers_the_status(api):
    response = api.post("/factorize", {"number": "408216"}, HTTP_ACCEPT="text/html")
    assert response.status_code == 202
    assert "factorization_str" in response.content.decode()
