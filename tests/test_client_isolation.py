"""Clients that cannot hurt each other: verified identities, fair share of workers and threads,
caps, ownership of jobs, and ids no one can compute. Each test first does what an attacker (or a
heavy client) did against the service before, then shows what happens now."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import secrets
import statistics
import time

import pytest
import requests
from rq.registry import StartedJobRegistry

from factorize_app import jobs
from factorize_app.tasks import get_task_type
from tests.conftest import wait_until, web_server

pytestmark = pytest.mark.django_db


def post(api, path: str, body: dict, auth: dict | None = None, **headers):
    return api.post(path, body, format="json", **(auth or {}), **headers)


def test_rotating_invented_tokens_gains_nothing(api, redis_conn, start_worker, key):
    # Before: each invented token was a client of its own, so 300 tokens took 263 turns ahead of B.
    for i in range(300):
        invented = {"HTTP_AUTHORIZATION": f"Bearer {secrets.token_hex(16)}"}
        refused = post(api, "/sleepy", {"seconds": 0.02, "tag": f"r{i}"}, invented)
        assert refused.status_code == 401 and refused["WWW-Authenticate"] == "Bearer"
    assert api.get("/sleepy", HTTP_ACCEPT="application/json").json()["load"] == 0
    # So client A's 300 jobs are one client's (its address, here), and B's job waits a turn or two.
    items = [{"seconds": 0.02, "tag": f"a{i}"} for i in range(300)]
    assert post(api, "/sleepy/batch", {"items": items}).status_code == 200
    b = key("b")
    b_id = post(api, "/sleepy", {"seconds": 0.02, "tag": "b"}, b).json()["job_id"]
    start_worker("sleepy")
    wait_until(lambda: api.get(f"/jobs/{b_id}", **b).json()["done"], timeout=60, what="B's job")
    a_done = redis_conn.zcard("rq:finished:sleepy") - 1
    print(f"[isolation] client B's job seen done after {a_done} of client A's 300")
    assert a_done <= 10  # within the worker's first batch (and the poll's interval)


def _sleep_job(api, auth, seconds: float, tag: str) -> str:
    response = post(api, "/sleepy", {"seconds": seconds, "tag": tag}, auth)
    assert response.status_code in (200, 202), response.content
    return response.json()["job_id"]


def _statuses(redis_conn, job_id: str) -> list[str]:
    return [fields[b"status"].decode() for _, fields in redis_conn.xrange(f"factorize:events:{job_id}")]


def test_a_client_alone_uses_every_worker_and_gives_one_back_when_another_waits(api, redis_conn, start_worker, key):
    a, b = key("a"), key("b")
    start_worker("sleepy")
    start_worker("sleepy")
    a_jobs = [_sleep_job(api, a, 2.8, f"hard{i}") for i in range(2)]  # hard: near the type's 3 s timeout
    jobs.open_events(job_ids=a_jobs)  # their events are written once someone reads them
    started = StartedJobRegistry("sleepy", connection=redis_conn)
    wait_until(lambda: started.count == 2, what="both of A's jobs to run")
    workers = {redis_conn.hget(f"rq:job:{job_id}", "worker_name") for job_id in a_jobs}
    assert len(workers) == 2  # a lone client's hard jobs run on both workers at once
    time.sleep(1.2)  # they have run for long (past the hand-back threshold)
    begun = time.monotonic()
    b_answer = post(api, "/sleepy", {"seconds": 0.01, "tag": "easy"}, b, HTTP_PREFER="wait=10").json()
    seen_after = time.monotonic() - begun
    print(f"[isolation] B's trivial job seen done {seen_after * 1000:.0f} ms after its submit, both workers held by A")
    assert b_answer["status"] == "finished"
    # Done before either of A's jobs could have ended: one of A's was handed back for it...
    histories = [_statuses(redis_conn, job_id) for job_id in a_jobs]
    assert sorted(history.count("queued") for history in histories) == [0, 1]
    assert all("finished" not in history for history in histories)
    # ...queued again (its pollers see that), not failed or retried, and later finished, once.
    for job_id in a_jobs:
        wait_until(lambda job_id=job_id: api.get(f"/jobs/{job_id}", **a).json()["done"], timeout=30, what="A's jobs")
        body = api.get(f"/jobs/{job_id}", **a).json()
        assert body["status"] == "finished", body["error"]
        assert redis_conn.xlen(f"rq:results:{job_id}") == 1
    assert redis_conn.zcard("rq:failed:sleepy") == 0


def test_fair_turns_count_worker_time_not_jobs(api, redis_conn, start_worker, key):
    a, b = key("a"), key("b")
    expensive = [{"seconds": 0.2, "tag": f"a{i}"} for i in range(30)]
    cheap = [{"seconds": 0.01, "tag": f"b{i}"} for i in range(400)]
    a_ids = [item["job_id"] for item in post(api, "/sleepy/batch", {"items": expensive}, a).json()["results"]]
    b_ids = [item["job_id"] for item in post(api, "/sleepy/batch", {"items": cheap}, b).json()["results"]]
    start_worker("sleepy", WORKER_BATCH_SECONDS="0.05")
    wait_until(lambda: redis_conn.zcard("rq:finished:sleepy") >= 60, timeout=60, what="some jobs to finish")
    finished = set(redis_conn.zrange("rq:finished:sleepy", 0, -1))
    a_seconds = 0.2 * sum(job_id.encode() in finished for job_id in a_ids)
    b_seconds = 0.01 * sum(job_id.encode() in finished for job_id in b_ids)
    print(f"[isolation] worker time used: A {a_seconds:.2f} s, B {b_seconds:.2f} s")
    # One job each per turn would have given A twenty times B's worker time.
    assert 0.33 < a_seconds / b_seconds < 3


def test_held_requests_per_client_are_capped_and_health_probes_stay_free(redis_conn):
    env = {"MAX_HELD_PER_CLIENT": "8", "WEB_THREADS": "64", "THROTTLE_POLL": "", "THROTTLE_SUBMIT": ""}
    with web_server(**env) as url:
        job_id = requests.post(f"{url}/sleepy", json={"seconds": 1, "tag": "held"}, timeout=10).json()["job_id"]

        def hold() -> requests.Response:
            return requests.get(f"{url}/jobs/{job_id}", headers={"Prefer": "wait=8"}, timeout=60)

        with concurrent.futures.ThreadPoolExecutor(max_workers=600) as pool:
            polls = [pool.submit(hold) for _ in range(600)]
            wait_until(lambda: sum(f.done() for f in polls) >= 592, timeout=60, what="the polls beyond the cap")
            health = []
            for _ in range(20):
                begun = time.monotonic()
                assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
                health.append(time.monotonic() - begun)
            still_held = sum(not f.done() for f in polls)
            answers = [f.result() for f in polls]
    quick = [r for r in answers if "Preference-Applied" not in r.headers]
    print(f"[isolation] 600 held polls: {len(quick)} answered at once; /healthz median "
          f"{statistics.median(health) * 1000:.1f} ms, max {max(health) * 1000:.1f} ms")
    assert len(quick) == 592 and all(r.status_code == 202 and r.json()["status"] == "queued" for r in quick)
    # The health probes were answered while the held polls still held their threads.
    assert still_held == 8


def test_only_an_owner_can_cancel_and_with_keys_only_an_owner_can_read(api, redis_conn, start_worker, key):
    a, b = key("a"), key("b")
    start_worker("sleepy")
    job_id = _sleep_job(api, a, 1.5, "owned")
    wait_until(lambda: api.get(f"/jobs/{job_id}", **a).json()["status"] == "started", what="A's job to start")
    # Before: B's DELETE answered 204 and A's job was gone. Now it is not B's to see or cancel.
    assert api.delete(f"/jobs/{job_id}", **b).status_code == 404
    assert api.get(f"/jobs/{job_id}", **b).status_code == 404
    assert api.post(f"/jobs/{job_id}/retry", **b).status_code == 404
    finished = wait_until(lambda: (body := api.get(f"/jobs/{job_id}", **a).json())["done"] and body, timeout=30)
    assert finished["status"] == "finished"
    # Anonymous clients (known by address, as in the seed) read jobs by id; the id is not guessable.
    assert api.get(f"/jobs/{job_id}").status_code == 200


def test_several_owners_each_withdraw_their_own_interest(api, redis_conn, key):
    a, b = key("a"), key("b")
    first = _sleep_job(api, a, 1, "shared")
    assert _sleep_job(api, b, 1, "shared") == first  # the same input: the same job, two owners
    assert api.delete(f"/jobs/{first}", **a).status_code == 204  # A no longer wants it...
    assert api.get(f"/jobs/{first}", **a).status_code == 404
    assert api.get(f"/jobs/{first}", **b).json()["status"] == "queued"  # ...B still does
    assert api.delete(f"/jobs/{first}", **b).status_code == 204
    assert api.get(f"/jobs/{first}", **b).json()["status"] == "canceled"


def test_job_ids_are_keyed_not_a_plain_digest_of_the_input(settings):
    task_type = get_task_type("factorization")
    job_id = jobs.job_id_for(task_type, {"number": 408216})
    plain = hashlib.sha256(json.dumps({"number": 408216}, separators=(",", ":")).encode()).hexdigest()[:32]
    assert job_id == jobs.job_id_for(task_type, {"number": 408216})  # still the same input, the same id
    assert job_id.removeprefix("factorization-") != plain
    settings.JOB_ID_KEY = "another deployment"
    assert jobs.job_id_for(task_type, {"number": 408216}) != job_id


def test_queued_jobs_per_client_are_capped_with_a_429_naming_the_limit(api, settings, key):
    settings.MAX_QUEUED_PER_CLIENT = 3
    a = key("a")
    for i in range(3):
        _sleep_job(api, a, 1, f"q{i}")
    refused = post(api, "/sleepy", {"seconds": 1, "tag": "q3"}, a)
    assert refused.status_code == 429
    assert refused.json()["limit"] == "MAX_QUEUED_PER_CLIENT" and refused.json()["max"] == 3
    batch = post(api, "/sleepy/batch", {"items": [{"seconds": 1, "tag": "q9"}]}, a)
    assert batch.status_code == 429 and batch.json()["limit"] == "MAX_QUEUED_PER_CLIENT"
    assert post(api, "/sleepy", {"seconds": 1, "tag": "q0"}, a).status_code == 202  # a poll still answers
    # Other clients have their own; a key may have its own cap.
    assert post(api, "/sleepy", {"seconds": 1, "tag": "b0"}, key("b")).status_code == 202
    roomy = key("roomy", max_queued=5)
    answers = [post(api, "/sleepy", {"seconds": 1, "tag": f"r{i}"}, roomy).status_code for i in range(6)]
    assert answers == [202] * 5 + [429]


def test_a_keys_running_cap_keeps_its_jobs_to_one_worker(api, redis_conn, start_worker, key):
    capped = key("capped", max_running=1)
    start_worker("sleepy")
    start_worker("sleepy")
    ids = [_sleep_job(api, capped, 0.6, f"c{i}") for i in range(3)]
    started = StartedJobRegistry("sleepy", connection=redis_conn)
    most = 0
    deadline = time.monotonic() + 30
    while not all(api.get(f"/jobs/{job_id}", **capped).json()["done"] for job_id in ids):
        most = max(most, started.count)
        assert time.monotonic() < deadline, "the capped jobs did not finish"
        time.sleep(0.02)
    assert most == 1


def test_batch_items_count_one_by_one_against_the_submit_allowance(api, settings, key):
    settings.THROTTLE_SUBMIT = "5/minute"
    a = key("a")
    items = [{"seconds": 1, "tag": f"t{i}"} for i in range(6)]
    assert post(api, "/sleepy/batch", {"items": items}, a).status_code == 429  # six submits in one call
    b = key("b")
    assert post(api, "/sleepy/batch", {"items": items[:3]}, b).status_code == 200  # a batch answers 200
    assert post(api, "/sleepy/batch", {"items": items[3:]}, b).status_code == 429  # 3 + 3 > 5
