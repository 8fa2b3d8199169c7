"""Shared jobs: the same input is one job with many owners, and no owner decides for the others.
A deadline (Cancel-After) is its submitter's: the job stops only when no owner still wants it.
A shared job runs at the earliest fair turn among its owners. Real workers; `sleepy` jobs."""

from __future__ import annotations

import pytest

from factorize_app import jobs
from factorize_app.jobs import keys
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db


def submit(api, auth: dict, body: dict, **headers) -> dict:
    response = api.post("/sleepy", body, format="json", **auth, **headers)
    assert response.status_code in (200, 202), response.content
    jobs.open_events(job_ids=[response.json()["job_id"]])  # its events are written once someone reads them
    return response.json()


def redis_seconds(redis_conn) -> float:
    seconds, micros = redis_conn.time()
    return seconds + micros / 1e6


def event_times(redis_conn, job_id: str, status: str) -> list[float]:
    """Redis's time (s) of each of the job's events of `status`."""
    return [
        int(entry_id.split(b"-")[0]) / 1000
        for entry_id, fields in redis_conn.xrange(f"factorize:events:{job_id}")
        if fields[b"status"].decode() == status
    ]


def done(api, job_id: str, auth: dict, timeout: float = 30) -> dict:
    def body():
        answer = api.get(f"/jobs/{job_id}", **auth).json()
        return answer if answer["done"] else None

    return wait_until(body, timeout=timeout, what=f"job {job_id}")


def test_a_second_owner_without_a_deadline_keeps_a_running_job_past_the_firsts(api, redis_conn, warm_worker, key):
    a = key("a")
    warm_worker("sleepy")
    body = {"seconds": 2.5, "tag": "shared-running"}
    job_id = submit(api, a, body, HTTP_CANCEL_AFTER="1")["job_id"]
    wait_until(lambda: api.get(f"/jobs/{job_id}", **a).json()["status"] == "started", what="the job to start")
    # An anonymous client (its address) asks for the same input, with no deadline.
    assert submit(api, {}, body)["job_id"] == job_id
    # Before: A's deadline aborted it for both, 1 s after A's submit.
    finished = done(api, job_id, a)
    assert finished["status"] == "finished", finished["error"]
    assert finished["slept"] == 2.5
    assert event_times(redis_conn, job_id, "canceled") == []


def test_a_queued_job_lives_past_the_first_owners_deadline_while_another_wants_it(api, redis_conn, start_worker, key):
    a, b = key("a"), key("b")
    body = {"seconds": 0.1, "tag": "shared-queued"}
    job_id = submit(api, a, body, HTTP_CANCEL_AFTER="1")["job_id"]
    deadline = float(redis_conn.hget(keys.job(job_id), keys.DEADLINE_FIELD))
    assert submit(api, b, body)["job_id"] == job_id  # B: no deadline
    wait_until(lambda: redis_seconds(redis_conn) > deadline + 0.2, what="A's deadline to pass")
    assert api.get(f"/jobs/{job_id}", **a).json()["status"] == "queued"  # not aborted: B still wants it
    start_worker("sleepy")
    assert done(api, job_id, b)["status"] == "finished"


def test_a_job_of_one_owner_names_it_in_its_hash_and_a_second_owner_makes_the_owners_a_set(api, redis_conn, key):
    a, b, c = key("a"), key("b"), key("c")
    body = {"seconds": 0.1, "tag": "shared-owners"}
    job_id = submit(api, a, body, HTTP_CANCEL_AFTER="30")["job_id"]
    first = redis_conn.hget(keys.job(job_id), keys.OWNER_FIELD)
    deadline = redis_conn.hget(keys.job(job_id), keys.DEADLINE_FIELD)
    assert first and deadline
    submit(api, a, body)  # its one owner again: nothing written for ownership
    assert not redis_conn.exists(keys.owners(job_id), keys.deadlines(job_id))
    assert api.get(f"/jobs/{job_id}", **c).status_code == 404  # not C's
    submit(api, b, body)  # B joins, with no deadline
    assert redis_conn.hget(keys.job(job_id), keys.OWNER_FIELD) is None
    owners = redis_conn.smembers(keys.owners(job_id))
    assert len(owners) == 2 and first in owners
    second = (owners - {first}).pop()
    assert redis_conn.hgetall(keys.deadlines(job_id)) == {first: deadline, second: keys.NO_DEADLINE.encode()}
    assert redis_conn.hget(keys.job(job_id), keys.DEADLINE_FIELD) is None  # B set none: none stops it
    for owner in (a, b):
        assert api.get(f"/jobs/{job_id}", **owner).json()["status"] == "queued"
    assert api.get(f"/jobs/{job_id}", **c).status_code == 404


def test_a_shared_job_stops_at_the_latest_of_its_owners_deadlines(api, redis_conn, warm_worker, key):
    a, b = key("a"), key("b")
    warm_worker("sleepy")
    body = {"seconds": 2.9, "tag": "shared-latest"}
    job_id = submit(api, a, body, HTTP_CANCEL_AFTER="1")["job_id"]
    wait_until(lambda: api.get(f"/jobs/{job_id}", **a).json()["status"] == "started", what="the job to start")
    b_submitted = redis_seconds(redis_conn)
    submit(api, b, body, HTTP_CANCEL_AFTER="2")
    b_deadline = float(redis_conn.hget(keys.job(job_id), keys.DEADLINE_FIELD))
    assert b_submitted + 2 <= b_deadline <= redis_seconds(redis_conn) + 2  # B's, not A's (1 s from A's submit)
    ended = done(api, job_id, b)
    assert ended["status"] == "canceled" and "deadline" in ended["error"], ended
    (canceled_at,) = event_times(redis_conn, job_id, "canceled")
    assert b_deadline <= canceled_at <= b_deadline + 0.5  # not before B's deadline; on time for it


def test_when_the_owner_without_a_deadline_withdraws_the_others_deadline_applies(api, redis_conn, warm_worker, key):
    a, b = key("a"), key("b")
    warm_worker("sleepy")
    body = {"seconds": 2.9, "tag": "shared-withdrawn"}
    job_id = submit(api, a, body, HTTP_CANCEL_AFTER="1")["job_id"]
    deadline = float(redis_conn.hget(keys.job(job_id), keys.DEADLINE_FIELD))
    submit(api, b, body)  # B: no deadline, so the job runs on past A's
    wait_until(lambda: api.get(f"/jobs/{job_id}", **a).json()["status"] == "started", what="the job to start")
    wait_until(lambda: redis_seconds(redis_conn) > deadline + 0.2, what="A's deadline to pass")
    assert api.get(f"/jobs/{job_id}", **a).json()["status"] == "started"
    withdrawn_at = redis_seconds(redis_conn)
    assert api.delete(f"/jobs/{job_id}", **b).status_code == 204  # B no longer wants it: A's deadline holds
    ended = done(api, job_id, a)
    assert ended["status"] == "canceled" and "deadline" in ended["error"], ended
    (canceled_at,) = event_times(redis_conn, job_id, "canceled")
    assert canceled_at - withdrawn_at < 1.0  # stopped at once, not when the job would have ended


def test_a_shared_job_runs_at_the_earliest_turn_among_its_owners(api, redis_conn, start_worker, key):
    """The attack: A queues a victim's input behind a backlog of its own. Before: B's fresh inputs
    finished at once while the shared one waited for A's whole backlog (25 s in the probe)."""
    a, b = key("a"), key("b")
    backlog = [{"seconds": 0.15, "tag": f"a{i}"} for i in range(30)]
    shared = {"seconds": 0.01, "tag": "victim"}
    response = api.post("/sleepy/batch", {"items": [*backlog, shared]}, format="json", **a)
    assert response.status_code == 200
    ids = [item["job_id"] for item in response.json()["results"]]
    shared_id = ids[-1]
    assert submit(api, b, shared)["job_id"] == shared_id
    fresh_id = submit(api, b, {"seconds": 0.01, "tag": "fresh"})["job_id"]
    start_worker("sleepy", WORKER_BATCH_SECONDS="0.05")
    assert done(api, fresh_id, b)["status"] == "finished"
    assert done(api, shared_id, b)["status"] == "finished"
    backlog_done = sum(api.get(f"/jobs/{job_id}", **a).json()["done"] for job_id in ids[:-1])
    print(f"[shared] B's shared job done after {backlog_done} of A's 30 backlog jobs")
    assert backlog_done <= 10  # at B's turn, not at the end of A's backlog
    assert redis_conn.xlen(f"rq:results:{shared_id}") == 1  # run once, though lined up twice


def test_the_owners_of_a_job_whose_files_outlive_it_outlive_its_hash(api, redis_conn, key):
    from factorize_app.jobs.control import keep_owners

    a = key("a")
    job_id = submit(api, a, {"seconds": 0.1, "tag": "owners-outlive"}, HTTP_CANCEL_AFTER="30")["job_id"]
    owner = redis_conn.hget(keys.job(job_id), keys.OWNER_FIELD).decode()
    deadline = redis_conn.hget(keys.job(job_id), keys.DEADLINE_FIELD)
    keep_owners(job_id=job_id, ttl=5000)  # as a job's stored files do (jobs/result_files.py)
    assert redis_conn.smembers(keys.owners(job_id)) == {owner.encode()}
    assert redis_conn.hgetall(keys.deadlines(job_id)) == {owner.encode(): deadline}
    assert 4900 < redis_conn.ttl(keys.owners(job_id)) <= 5000
    redis_conn.delete(keys.job(job_id))  # its hash expired; its files remain
    assert jobs.is_owner(job_id=job_id, client=owner)
    assert not jobs.is_owner(job_id=job_id, client=owner + "-not")
