"""A fair share of workers across clients: no set of clients holding every worker with long jobs
keeps a newcomer's short job waiting for their end. Real workers; `sleepy` jobs (3 s timeout)."""

from __future__ import annotations

import time

import pytest
from rq.registry import StartedJobRegistry

from factorize_app import jobs
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db


def sleep_job(api, auth, seconds: float, tag: str, **headers) -> dict:
    response = api.post("/sleepy", {"seconds": seconds, "tag": tag}, format="json", **auth, **headers)
    assert response.status_code in (200, 202), response.content
    return response.json()


def done(api, job_id: str, auth, timeout: float) -> dict:
    def body():
        answer = api.get(f"/jobs/{job_id}", **auth).json()
        return answer if answer["done"] else None

    return wait_until(body, timeout=timeout, what=f"job {job_id}")


def statuses(redis_conn, job_id: str) -> list[str]:
    return [fields[b"status"].decode() for _, fields in redis_conn.xrange(f"factorize:events:{job_id}")]


def test_a_newcomers_short_job_is_not_stuck_behind_two_clients_holding_every_worker(api, redis_conn, start_worker, key):
    a, b, c = key("a"), key("b"), key("c")
    start_worker("sleepy")
    start_worker("sleepy")
    hard = [sleep_job(api, a, 2.8, "hard-a")["job_id"], sleep_job(api, b, 2.8, "hard-b")["job_id"]]
    jobs.open_events(job_ids=hard)  # their events are written once someone reads them
    started = StartedJobRegistry("sleepy", connection=redis_conn)
    wait_until(lambda: started.count == 2, what="both hard jobs to run")
    time.sleep(1.2)  # they have run for long (past the 1 s grace); each client holds its share
    begun = time.monotonic()
    answer = sleep_job(api, c, 0.01, "easy", HTTP_PREFER="wait=10")
    seen_after = time.monotonic() - begun
    print(f"[fairness] C's trivial job done {seen_after * 1000:.0f} ms after its submit; A and B held both workers")
    # Before: it waited for a hard job to end (up to the type's timeout; 30 s with hard numbers).
    assert answer["status"] == "finished"
    histories = [statuses(redis_conn, job_id) for job_id in hard]
    assert sorted(history.count("queued") for history in histories) == [0, 1]  # one was handed back...
    assert all("finished" not in history for history in histories)  # ...before either could end
    for job_id, auth in zip(hard, (a, b), strict=True):  # and both finish, once, neither failed
        body = done(api, job_id, auth, timeout=30)
        assert body["status"] == "finished", body["error"]
        assert redis_conn.xlen(f"rq:results:{job_id}") == 1
    assert redis_conn.zcard("rq:failed:sleepy") == 0


def test_hard_jobs_of_more_clients_than_workers_all_finish_handed_back_a_bounded_number_of_times(
    api, redis_conn, start_worker, key
):
    """Three clients' hard jobs on two workers: someone always waits with nothing running, so jobs
    are handed back; each hand-back doubles the job's grace, so none is handed back for ever."""
    start_worker("sleepy")
    start_worker("sleepy")
    clients = {name: key(name) for name in "abc"}
    ids = {name: [sleep_job(api, auth, 2.2, f"hard-{name}{i}")["job_id"] for i in range(2)]
           for name, auth in clients.items()}  # fmt: skip
    jobs.open_events(job_ids=[job_id for each in ids.values() for job_id in each])  # events written once read
    for name, auth in clients.items():
        for job_id in ids[name]:
            body = done(api, job_id, auth, timeout=90)
            assert body["status"] == "finished", body["error"]
    hand_backs = {job_id: statuses(redis_conn, job_id).count("queued") for jobs in ids.values() for job_id in jobs}
    print(f"[fairness] 6 hard jobs of 3 clients on 2 workers: hand-backs per job {sorted(hand_backs.values())}")
    # 1 s grace, then 2 s: a job handed back twice would need 4 s more, past its 3 s timeout.
    assert max(hand_backs.values()) <= 2
    assert sum(hand_backs.values()) >= 1  # the newcomers were served by hand-backs
    assert redis_conn.zcard("rq:failed:sleepy") == 0
    assert all(redis_conn.xlen(f"rq:results:{job_id}") == 1 for job_id in hand_backs)
