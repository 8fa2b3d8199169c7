"""Each client's budget of Redis memory (factorize_app/jobs/budgets.py): new jobs are charged their
estimated records for as long as those live; past the budget a submit of new jobs is a 429
naming REDIS_CLIENT_SHARE, polls of the client's jobs still answer, other clients are untouched,
and room comes back as the charges expire. End to end: one hostile client on a Redis capped by
maxmemory, with a real web server and worker, holds at most its share, and another client's
submits still go through."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from django.test import override_settings

from factorize_app import jobs
from factorize_app.jobs import budgets
from factorize_app.jobs.budgets import BudgetExceeded, job_bytes
from factorize_app.models import ApiKey
from factorize_app.tasks import get_task_type
from tests.conftest import wait_until, web_server
from tests.test_redis_outage import OwnRedis

FACTORIZATION = get_task_type("factorization")


def inputs(first: int, count: int) -> list[dict]:
    return [{"number": 10**9 + index} for index in range(first, first + count)]


def budget_for(count: int) -> int:
    """A budget of exactly `count` jobs of `inputs` (all ten-digit numbers: one size)."""
    return count * job_bytes(inputs(0, 1)[0])


# --- In process, on the test database --------------------------------------------------------


def test_new_jobs_past_the_budget_are_refused_and_polls_still_answer(redis_conn, settings):
    settings.REDIS_CLIENT_BYTES = budget_for(10)
    jobs.submit_many(task_type=FACTORIZATION, items=inputs(0, 8), client="address-10.0.0.1")
    with pytest.raises(BudgetExceeded) as refused:
        jobs.submit_many(task_type=FACTORIZATION, items=inputs(8, 3), client="address-10.0.0.1")
    assert refused.value.limit == "REDIS_CLIENT_SHARE" and refused.value.cap == budget_for(10)
    assert refused.value.details == {"held": budget_for(8), "needed": budget_for(3)}
    assert budgets.held(client="address-10.0.0.1") == budget_for(8), "a refused submit charges nothing"
    # Inputs it already has are polls, not new jobs: they answer, and charge nothing more.
    states = jobs.submit_many(task_type=FACTORIZATION, items=inputs(0, 8), client="address-10.0.0.1")
    assert all(state.status == jobs.QUEUED for state in states)
    assert budgets.held(client="address-10.0.0.1") == budget_for(8)
    jobs.submit_many(task_type=FACTORIZATION, items=inputs(8, 2), client="address-10.0.0.1")  # exactly full
    with pytest.raises(BudgetExceeded):
        jobs.submit(task_type=FACTORIZATION, data=inputs(10, 1)[0], client="address-10.0.0.1")
    # Another client has a budget of its own, and may even poll the first one's jobs.
    jobs.submit_many(task_type=FACTORIZATION, items=inputs(100, 10), client="address-10.0.0.2")
    assert jobs.submit(task_type=FACTORIZATION, data=inputs(0, 1)[0], client="address-10.0.0.2").job_id


def test_an_api_key_has_its_own_budget(redis_conn, settings):
    settings.REDIS_CLIENT_BYTES = budget_for(1)
    limits = jobs.ClientLimits(redis_bytes=budget_for(5))
    jobs.submit_many(task_type=FACTORIZATION, items=inputs(0, 5), client="key-1", limits=limits)
    with pytest.raises(BudgetExceeded):
        jobs.submit(task_type=FACTORIZATION, data=inputs(5, 1)[0], client="key-1", limits=limits)


def test_the_charge_expires_with_the_jobs_records(redis_conn, settings):
    """Redis gives no callback on expiry: the charge sits in a counter per expiry slot, which
    expires once the jobs charged to it have. Short TTLs make the lifetime 4 s here."""
    settings.REDIS_CLIENT_BYTES = budget_for(3)
    short = {"JOB_TTL": 1, "JOB_TIMEOUT": 1, "RESULT_TTL": 2, "FAILURE_TTL": 2}
    with override_settings(**short):
        assert budgets.lifetime(FACTORIZATION) == 4
        jobs.submit_many(task_type=FACTORIZATION, items=inputs(0, 3), client="address-10.0.0.3")
        with pytest.raises(BudgetExceeded) as refused:
            jobs.submit(task_type=FACTORIZATION, data=inputs(3, 1)[0], client="address-10.0.0.3")
        assert 1 <= refused.value.retry_after <= 4 + budgets.slot_seconds()
        counters = redis_conn.keys("factorize:budget:address-10.0.0.3:*")
        assert len(counters) == 1 and 0 < redis_conn.ttl(counters[0]) <= 4 + budgets.slot_seconds()
        wait_until(lambda: budgets.held(client="address-10.0.0.3") == 0, timeout=30, what="the charge to expire")
        assert jobs.submit(task_type=FACTORIZATION, data=inputs(3, 1)[0], client="address-10.0.0.3").job_id


def test_the_default_budget_is_a_share_of_maxmemory(settings, monkeypatch):
    settings.REDIS_CLIENT_BYTES = 0
    settings.REDIS_CLIENT_SHARE = 0.1
    monkeypatch.setattr(budgets, "redis_memory", lambda server="home": (0, 256 * 1024 * 1024))
    assert budgets.client_budget() == int(0.1 * 256 * 1024 * 1024)
    assert budgets.client_budget(own=5000) == 5000, "an API key's own"
    monkeypatch.setattr(budgets, "redis_memory", lambda server="home": (0, 0))
    assert budgets.client_budget() == 0, "no maxmemory, no share of it: no budget"
    settings.REDIS_CLIENT_BYTES = 123_456
    assert budgets.client_budget() == 123_456


@pytest.mark.django_db
def test_the_api_answers_429_naming_the_budget(api, redis_conn, settings):
    settings.REDIS_CLIENT_BYTES = budget_for(4)
    assert api.post("/factorize/batch", {"items": inputs(0, 3)}, format="json").status_code == 200
    refused = api.post("/factorize/batch", {"items": inputs(3, 2)}, format="json")
    assert refused.status_code == 429, refused.content
    body = refused.json()
    assert body["limit"] == "REDIS_CLIENT_SHARE" and body["max"] == budget_for(4)
    assert body["held"] == budget_for(3) and body["needed"] == budget_for(2)
    assert "REDIS_CLIENT_SHARE" in body["detail"] and int(refused["Retry-After"]) >= 1
    assert api.post("/factorize", inputs(3, 1)[0], format="json").status_code == 202, "one more fits"
    single = api.post("/factorize", inputs(4, 1)[0], format="json")
    assert single.status_code == 429 and single.json()["limit"] == "REDIS_CLIENT_SHARE"
    assert api.post("/factorize", inputs(0, 1)[0], format="json").status_code == 202, "a poll still answers"


@pytest.mark.django_db
def test_an_api_keys_own_budget_applies_to_its_requests(api, redis_conn, settings):
    settings.REDIS_CLIENT_BYTES = budget_for(1)
    _, plaintext = ApiKey.create_key(name="big results", max_redis_bytes=budget_for(3))
    keyed = {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}
    assert api.post("/factorize/batch", {"items": inputs(0, 3)}, format="json", **keyed).status_code == 200
    refused = api.post("/factorize", inputs(3, 1)[0], format="json", **keyed)
    assert refused.status_code == 429 and refused.json()["max"] == budget_for(3)
    assert api.post("/factorize/batch", {"items": inputs(10, 2)}, format="json").status_code == 429, "the default"


# --- End to end: a hostile client on a capped Redis --------------------------------------------

MAXMEMORY = 64 * 1024 * 1024
SHARE = 0.1


@pytest.fixture(scope="module")
def capped(tmp_path_factory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("budget-redis"), "--maxmemory", str(MAXMEMORY), "--appendonly", "no")
    server.start()
    yield server
    server.stop()


def post_from(url: str, source: str, path: str, body: dict) -> tuple[int, dict]:
    """A POST from one loopback source address (each is its own client)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60, source_address=(source, 0))
    try:
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def test_one_client_holds_at_most_its_share_of_a_capped_redis(capped, start_worker):
    """Before the budget, one client's results filled the Redis and every client's submits got 503
    for up to RESULT_TTL. Now the hostile client (127.0.0.2, batches of 25 new inputs until
    refused) is stopped at its share: its jobs' records, measured in Redis once they finished,
    stay within the share (the charge per job is an estimate of them), and another client
    (127.0.0.3) still submits."""
    conn = capped.client()
    env = {"THROTTLE_SUBMIT": "", "THROTTLE_POLL": "", "REDIS_CLIENT_SHARE": str(SHARE), "QUEUE_ORDER": "fair"}
    start_worker("factorization", wait=False, TEST_REDIS_URL=capped.url, **env)
    with web_server(capped.url, **env) as url:
        # Warm: the worker registered and every script loaded, by another client's finished job.
        status, _ = post_from(url, "127.0.0.9", "/factorize/batch", {"items": inputs(900_000, 1)})
        assert status == 200
        wait_until(lambda: conn.zcard("rq:finished:factorization") == 1, timeout=60, what="the warm-up job")
        before = int(conn.info("memory")["used_memory"])
        accepted, statuses, body = 0, [], {}
        for first in range(0, 100_000, 25):
            status, body = post_from(url, "127.0.0.2", "/factorize/batch", {"items": inputs(first, 25)})
            statuses.append(status)
            if status != 200:
                break
            accepted += 25
        assert statuses[-1] == 429 and body["limit"] == "REDIS_CLIENT_SHARE", (statuses[-5:], body)
        assert body["max"] == int(SHARE * MAXMEMORY)
        for number in range(400_000, 400_025):  # what is left of the budget, one job at a time
            status, body = post_from(url, "127.0.0.2", "/factorize", {"number": 10**9 + number})
            if status != 202:
                break
            accepted += 1
        assert status == 429 and body["limit"] == "REDIS_CLIENT_SHARE", body
        assert body["max"] - body["held"] < job_bytes(inputs(0, 1)[0]), "refused only when full"
        finished = lambda: conn.zcard("rq:finished:factorization") >= accepted + 1  # noqa: E731
        wait_until(finished, timeout=120, what="the worker to finish them")
        held = int(conn.info("memory")["used_memory"]) - before
        print(
            f"\nbudget: one client had {accepted} jobs accepted; its finished jobs hold {held / 1024 / 1024:.2f} MiB "
            f"of Redis ({held / accepted:.0f} B each), its share is {SHARE * MAXMEMORY / 1024 / 1024:.2f} MiB"
        )
        assert held <= 1.1 * SHARE * MAXMEMORY, f"the client holds {held} bytes"
        status, other = post_from(url, "127.0.0.3", "/factorize/batch", {"items": inputs(500_000, 100)})
        assert status == 200 and all(item["job_id"] for item in other["results"]), other
        status, again = post_from(url, "127.0.0.2", "/factorize", inputs(0, 1)[0])
        assert status == 200 and again["done"], "the full client still polls its own jobs"

