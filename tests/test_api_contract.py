"""The HTTP contract: the seed's examples verbatim, response shapes, bad input, outages."""

import base64
import importlib
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import PYTHON, ROOT, dead_redis_url, poll_until_done, queue_named, service_env, web_server

SEED_RESULT = {
    "factorization": [[2, 3], [3, 1], [73, 1], [233, 1]],
    "factorization_str": "2^3 3^1 73^1 233^1",
    "number": 408216,
}


def test_seed_async_example_exact_json(live_url, start_worker):
    first = requests.post(f"{live_url}/factorize", json={"number": 408216})
    assert first.status_code == 202
    job_id = first.json()["job_id"]
    assert first.json() == {
        "done": False,
        "number": 408216,
        "factorization": None,
        "factorization_str": None,
        "load": 1,
        "job_id": job_id,
        "status": "queued",
        "error": None,
        "progress": None,
    }
    assert first.headers["Location"] == f"/jobs/{job_id}"
    assert int(first.headers["Retry-After"]) >= 1

    start_worker("factorization")
    done = poll_until_done(lambda: requests.post(f"{live_url}/factorize", json={"number": 408216}))
    assert done == {
        "done": True,
        **SEED_RESULT,
        "load": 0,
        "job_id": job_id,
        "status": "finished",
        "error": None,
        "progress": None,
        "output": [[2, 3], [3, 1], [73, 1], [233, 1]],  # the primes it streamed (issue 32), beside the seed's
    }


def test_seed_polling_client_converges(live_url, warm_worker):
    """The seed's 20-number polling loop, verbatim but for a bound on its rounds."""
    warm_worker()
    numbers = [random.randint(2, 2**20) for _ in range(20)]
    done = False
    rounds = 0
    results = {}
    while not done:
        done = True
        for n in numbers:
            status = requests.post(f"{live_url}/factorize", json={"number": n}).json()
            if status["done"]:
                results[n] = status["factorization_str"]
            done = done and status["done"]
        if not done:
            rounds += 1
            assert rounds < 30, "the polling loop did not converge"
            time.sleep(1)
    for n, text in results.items():
        product = 1
        for term in text.split():
            prime, exponent = term.split("^")
            product *= int(prime) ** int(exponent)
        assert product == n


def test_seed_sync_example_exact_json(sync_server):
    """EXECUTION_MODE=sync answers at once, with no Redis anywhere."""
    response = requests.post(f"{sync_server}/factorize", json={"number": 408216})
    assert response.status_code == 200
    assert response.json() == {"done": True, **SEED_RESULT}
    primes = requests.post(f"{sync_server}/primes", json={"n": 100})
    assert primes.json() == {"done": True, "n": 100, "count": 25, "largest": 97}


def test_sync_mode_in_process(api, settings):
    settings.EXECUTION_MODE = "sync"
    response = api.post("/factorize", {"number": "408216"}, format="json")
    assert response.status_code == 200
    assert response.json() == {"done": True, **SEED_RESULT}
    failed = api.post("/failing", {"tag": "x"}, format="json")
    assert failed.status_code == 200
    assert failed.json()["done"] is True
    assert failed.json()["error"] == "ValueError: cannot handle x"


def test_sync_mode_bounds_a_handler_by_the_job_timeout():
    hard = 671998030559713968361666935769 * 282174488599599500573849980909  # two 30-digit primes
    with web_server(dead_redis_url(), EXECUTION_MODE="sync", JOB_TIMEOUT="2") as base:
        started = time.monotonic()
        slow = requests.post(f"{base}/factorize", json={"number": hard}, timeout=60)
        assert slow.status_code == 200 and slow.json()["error"] == "timed out after 2 s"
        assert time.monotonic() - started < 30
        # The overrunning handler was stopped; the next request is served as usual.
        assert requests.post(f"{base}/factorize", json={"number": 408216}, timeout=60).json()["factorization"]


@pytest.mark.parametrize("path", ["/factorize", "/factorize/"])
def test_post_with_or_without_slash_never_redirects(api, path):
    response = api.post(path, {"number": 12}, format="json")
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/metrics", 200),
        ("/queues", 200),
        (f"/jobs/factorization-{'0' * 32}", 404),
    ],
)
def test_every_api_path_answers_with_and_without_a_slash(api, path, status):
    assert api.get(path).status_code == api.get(path + "/").status_code == status


@pytest.mark.parametrize(
    ("path", "page"),
    [(page.rstrip("/"), page) for page in ("/admin/", "/django-rq/", "/api/docs/", "/api/redoc/", "/api/schema/")],
)
def test_pages_without_their_slash_redirect_to_it(api, path, page):
    response = api.get(path + "?x=1")
    assert response.status_code == 302 and response["Location"] == page + "?x=1"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"number": "abc"},
        {"number": 1.5},
        {"number": True},
        {"number": None},
        {"number": [4]},
        {"number": 1},
        {"number": 0},
        {"number": -7},
        {"number": "12a"},
        {"number": " 12"},
        {"number": 10**100},
        {"number": "1" * 101},
    ],
    ids=repr,
)
def test_bad_number_is_400_naming_the_field_and_enqueues_nothing(api, redis_conn, body):
    response = api.post("/factorize", body, format="json")
    assert response.status_code == 400
    assert "number" in response.json()
    assert not redis_conn.keys("rq:job:*")


def test_largest_allowed_number_and_digit_strings_are_accepted(api):
    assert api.post("/factorize", {"number": "9" * 100}, format="json").status_code == 202
    assert api.post("/factorize", {"number": 10**99}, format="json").status_code == 202


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", "5", '"408216"', "{"])
def test_body_that_is_not_a_json_object_is_400(api, redis_conn, raw):
    response = api.post("/factorize", raw, content_type="application/json")
    assert response.status_code == 400
    assert response.json()
    assert not redis_conn.keys("rq:job:*")


@pytest.mark.parametrize("n", [1, 10**7 + 1, "x", None])
def test_primes_n_out_of_range_is_400(api, n):
    response = api.post("/primes", {"n": n}, format="json")
    assert response.status_code == 400
    assert "n" in response.json()


def test_unknown_job_and_unknown_path_are_404_json(api):
    for path in ["/jobs/nope", "/jobs/factorization-" + "0" * 32, "/jobs/other-" + "0" * 32, "/nowhere"]:
        response = api.get(path)
        assert response.status_code == 404, path
        assert "detail" in response.json()


def test_api_root_lists_every_task_type_and_queues(api):
    response = api.get("/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert {"factorize", "primes", "queues"} <= set(response.json())


def test_browsable_api_renders_html(api):
    response = api.get("/factorize", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert b"<form" in response.content


def test_redis_outage_is_503_json_on_every_endpoint():
    """A server whose Redis is down answers 503 with a detail, quickly, on every endpoint."""
    calls = [
        ("post", "/factorize", {"number": 408216}),
        ("post", "/primes", {"n": 10}),
        ("get", "/factorize", None),
        ("get", "/jobs/factorization-" + "0" * 32, None),
        ("delete", "/jobs/factorization-" + "0" * 32, None),
        ("get", "/queues", None),
    ]
    with web_server(dead_redis_url()) as base:
        for method, path, body in calls:
            response = requests.request(method, base + path, json=body, timeout=10)
            assert response.status_code == 503, (method, path, response.text)
            assert "detail" in response.json()
        # Bad input is still a 400: validation needs no Redis.
        assert requests.post(f"{base}/factorize", json={"number": "x"}, timeout=10).status_code == 400


# --- Request bodies: JSON, as documented; forms for the browsable API only, each field once -----


def test_the_schema_documents_json_request_bodies_only(api):
    """Documenting form and multipart too made generated clients send every field in all three."""
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    bodies = {
        f"{method.upper()} {path}": sorted(operation["requestBody"]["content"])
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "requestBody" in operation
    }
    assert {"POST /factorize", "POST /factorize/batch"} <= set(bodies)
    # ...but an upload, whose one part is the file (streamed, never JSON).
    assert {name: types for name, types in bodies.items() if types != ["application/json"]} == {
        "POST /files": ["multipart/form-data"]
    }


def doubled_multipart(fields: dict[str, list[str]]) -> dict:
    """What openapi-python-client sent for an operation documenting three content types: the body
    as form fields and as multipart parts at once, in one multipart request."""
    data = {name: values for name, values in fields.items()}
    files = [(name, (None, value.encode(), "text/plain")) for name, values in fields.items() for value in values]
    return {"data": data, "files": files}


def test_a_form_or_multipart_body_with_a_repeated_field_is_refused_naming_it(live_url, redis_conn):
    """Over the real server (the lean lane leaves non-JSON bodies to DRF): nothing is queued."""
    batch = requests.post(f"{live_url}/factorize/batch", **doubled_multipart({"numbers": ["91", "92", "93"]}))
    assert batch.status_code == 400 and "Sent 6 times" in batch.json()["numbers"][0], batch.text
    submit = requests.post(f"{live_url}/factorize", **doubled_multipart({"number": ["94"]}))
    assert submit.status_code == 400 and "Sent 2 times" in submit.json()["number"][0], submit.text
    form = requests.post(f"{live_url}/factorize", data="number=95&number=96", headers=FORM)
    assert form.status_code == 400 and set(form.json()) == {"number"}, form.text
    assert queue_named(requests.get(f"{live_url}/queues").json(), "factorization")["queued"] == 0
    once = requests.post(f"{live_url}/factorize", data="number=97", headers=FORM)  # the HTML form's post
    assert once.status_code == 202 and once.json()["number"] == 97


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"generated-client test signing key").decode()


@pytest.fixture(scope="module")
def generated_client(tmp_path_factory):
    """A client generated from the service's schema by openapi-python-client, offline."""
    folder = tmp_path_factory.mktemp("generated")
    schema = folder / "openapi.yaml"
    env = service_env()
    subprocess.run([PYTHON, "manage.py", "spectacular", "--file", str(schema)], cwd=ROOT, env=env, check=True)
    (folder / "config.yaml").write_text("package_name_override: generated_factorize_client\npost_hooks: []\n")
    generator = Path(PYTHON).parent / "openapi-python-client"
    generated = subprocess.run(
        [generator, "generate", "--path", schema, "--config", folder / "config.yaml", "--meta", "none"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    sys.path.insert(0, str(folder))
    try:
        # Not named factorize_client: that is the project's own client (client/), maybe imported already.
        yield importlib.import_module("generated_factorize_client")
    finally:
        sys.path.remove(str(folder))


def test_a_generated_client_submits_a_batch_once_and_a_webhook_filter_as_a_list(generated_client, redis_conn):
    from generated_factorize_client import Client
    from generated_factorize_client.api.factorize import factorization_batch, factorization_submit
    from generated_factorize_client.models import FactorizationBatchInput, FactorizationInput, WebhookEventsFilterEnum

    with web_server(WEBHOOK_SECRET=WEBHOOK_SECRET, WEBHOOK_ALLOWED_HOSTS="127.0.0.1:9") as url:
        client = Client(base_url=url, raise_on_unexpected_status=True)
        batch = factorization_batch.sync_detailed(client=client, body=FactorizationBatchInput(numbers=[81, 82, 83]))
        assert batch.status_code == 200, batch.content
        results = batch.parsed.results
        assert [item.number for item in results] == [81, 82, 83]
        assert queue_named(requests.get(f"{url}/queues").json(), "factorization")["queued"] == 3

        events = [WebhookEventsFilterEnum.START, WebhookEventsFilterEnum.COMPLETED]
        body = FactorizationInput(number=84, webhook="http://127.0.0.1:9/hook", webhook_events_filter=events)
        submitted = factorization_submit.sync_detailed(client=client, body=body)
        assert submitted.status_code == 202, submitted.content
        job_id = submitted.parsed.job_id
        (subscription,) = requests.get(f"{url}/jobs/{job_id}/webhooks").json()["subscriptions"]
        assert sorted(subscription["events"]) == ["completed", "start"]
