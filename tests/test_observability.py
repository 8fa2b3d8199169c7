"""Seeing the service: OpenAPI schema and docs, health, Prometheus metrics, structured worker logs."""

import json
import re
import shutil
import subprocess

import pytest
import requests
from django.contrib.auth import get_user_model
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
        too_large = {"413"} if task_type.file_fields else set()  # a file over its limit
        assert set(post["responses"]) == {"200", "202", "400", "401", "429", "503"} | too_large
        assert set(post["responses"]["202"]["headers"]) == {"Location", "Retry-After", "Preference-Applied"}
        assert set(post["responses"]["200"]["headers"]) == {"Preference-Applied"}
        assert set(post["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}  # its own stream
        assert "Prefer" in {p["name"] for p in post["parameters"]}
        status = schema["components"]["schemas"][
            post["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
        ]
        expected = {
            "done", *task_type.input_fields, *task_type.result_fields, "load", "job_id", "status", "error", "progress"
        }
        # traceback: failed jobs, for staff and owners; webhook_secret: a submit with a webhook;
        # result_file: a result too large for Redis; output: a streaming job's pieces so far.
        assert set(status["properties"]) == expected | {"traceback", "webhook_secret", "result_file", "output"}
        assert "traceback" not in status["required"]
        batch = paths[f"/{task_type.path}/batch"]["post"]
        assert set(batch["responses"]) == {"200", "400", "401", "429", "503"}
        components = schema["components"]["schemas"]
        answer = components[batch["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]]
        item = components[answer["properties"]["results"]["items"]["$ref"].split("/")[-1]]
        assert len(item["oneOf"]) == 2  # the status body, or an invalid item's errors
    assert set(paths["/jobs/{id}"]) == {"get", "delete"}
    assert set(paths["/jobs/{id}"]["get"]["responses"]) == {"200", "202", "400", "401", "404", "429", "503"}
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


def promtool_check(text: str) -> None:
    """Prometheus's own linter on an exposition, when promtool is installed (`make test` installs
    it: scripts/ensure-promtool.sh); exit 3 is a lint problem, such as a non-counter named `_total`."""
    promtool = shutil.which("promtool")
    if promtool is None:
        print("promtool is not installed: `promtool check metrics` skipped")
        return
    checked = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()


@pytest.mark.django_db
def test_metrics_pass_promtool_and_keep_django_rqs_own_timing(api, live_url):
    """django-rq's collector times itself in a Summary it names `..._total`, which only a counter
    may end in: it is served as `rq_request_processing_seconds`, and is still counted."""
    staff = get_user_model().objects.create_user("metrics-staff", password="a-password-1234", is_staff=True)
    api.force_login(staff)
    django_rq_scrape = api.get("/django-rq/metrics/")
    assert django_rq_scrape.status_code == 200 and b"rq_workers" in django_rq_scrape.content
    promtool_check(django_rq_scrape.content.decode())
    api.logout()
    in_process = api.get("/metrics").content.decode()  # prometheus-client's default registry
    served = requests.get(f"{live_url}/metrics", timeout=10).text  # multiprocess mode, as in production
    for text in (in_process, served):
        families = {family.name: family for family in text_string_to_metric_families(text)}
        misnamed = [name for name, family in families.items() if name.endswith("_total") and family.type != "counter"]
        assert misnamed == []
        assert families["rq_request_processing_seconds"].type == "summary"
        promtool_check(text)
    families = text_string_to_metric_families(in_process)
    samples = {sample.name: sample.value for family in families for sample in family.samples}
    assert samples["rq_request_processing_seconds_count"] >= 1, "django-rq's scrape above was timed"


def allowed_hosts_with(**env: str) -> subprocess.CompletedProcess:
    code = "from django.conf import settings; print(','.join(settings.ALLOWED_HOSTS))"
    return subprocess.run(
        [PYTHON, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env=service_env(DJANGO_SETTINGS_MODULE="project.settings", ALLOWED_HOSTS="queue.example.com", **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_pods_own_address_joins_the_allowed_hosts_and_only_an_address_is_taken():
    assert allowed_hosts_with().stdout.split() == ["queue.example.com"]
    assert allowed_hosts_with(POD_IP="10.1.2.3").stdout.split() == ["queue.example.com,10.1.2.3"]
    assert allowed_hosts_with(POD_IP="fd00::12").stdout.split() == ["queue.example.com,[fd00::12]"]
    for hostile in ("*", ".example.com", "10.1.2.0/24", "10.1.2.3:8080"):
        refused = allowed_hosts_with(POD_IP=hostile)
        assert refused.returncode != 0 and "POD_IP must be an IP address" in refused.stderr, hostile


def test_a_scrape_by_the_pods_address_is_answered_and_any_other_host_is_still_refused(redis_conn):
    with web_server(POD_IP="10.1.2.3") as url:
        pod = {"Host": "10.1.2.3:8080"}
        scrape = requests.get(f"{url}/metrics", headers=pod, timeout=10)
        assert scrape.status_code == 200 and "factorize_redis_up 1.0" in scrape.text
        assert requests.get(f"{url}/healthz", headers=pod, timeout=10).status_code == 200
        # The lean lane (api/lean.py) checks the same ALLOWED_HOSTS on its own.
        submit = requests.post(f"{url}/factorize", json={"number": 77}, headers=pod, timeout=10)
        assert submit.status_code == 202, submit.text
        for other in ("10.1.2.4:8080", "evil.example.com"):
            for method, path in (("GET", "/metrics"), ("GET", "/healthz"), ("POST", "/factorize")):
                refused = requests.request(method, f"{url}{path}", json={"number": 77}, headers={"Host": other})
                assert refused.status_code == 400, (other, method, path, refused.status_code)


def test_worker_logs_a_json_line_per_batch_and_per_failed_job(api, warm_worker):
    worker = warm_worker("failing", "factorization")
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


def test_with_debug_logging_the_worker_logs_every_finished_job(api, warm_worker):
    worker = warm_worker("factorization", LOG_LEVEL="DEBUG")
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
