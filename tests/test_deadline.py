"""A Cancel-After deadline stops a running job on time: never early, and at most 100 ms late.

Times are read on one clock, Redis's: TIME just before each submit, and the id (Redis's time in
milliseconds) of the job's `canceled` event in its event stream.
"""

from __future__ import annotations

import pytest

from factorize_app import jobs
from factorize_app.jobs import keys
from tests.conftest import wait_until

CANCEL_AFTER = 2.0
# How late a deadline may stop its job: the 100 ms promised, plus the event id's millisecond
# truncation. The request's own time (TIME before the POST to its answer) is added per submit:
# the server starts the deadline somewhere in it.
LATE = 0.1 + 0.001


def redis_seconds(redis_conn) -> float:
    seconds, micros = redis_conn.time()
    return seconds + micros / 1e6


def canceled_at(redis_conn, job_id: str) -> float | None:
    """Redis's time (s) when the job's `canceled` event was written, or None before it."""
    for entry_id, fields in redis_conn.xrange(f"factorize:events:{job_id}"):
        if fields[b"status"] == b"canceled":
            return int(entry_id.split(b"-")[0]) / 1000
    return None


def stop_with_delete(api, redis_conn, tag: str) -> None:
    job_id = api.post("/sleepy", {"seconds": 2.9, "tag": tag}, format="json").json()["job_id"]
    jobs.open_events(job_ids=[job_id])  # its events are written once someone reads them
    wait_until(lambda: api.get(f"/jobs/{job_id}").json()["status"] == "started", what="the job to start")
    assert api.delete(f"/jobs/{job_id}").status_code == 202
    wait_until(lambda: canceled_at(redis_conn, job_id), timeout=10, what="the DELETE to stop it")


def cancel_after_delay(api, redis_conn, tag: str) -> tuple[float, float]:
    """Submit a slow job with `Cancel-After: 2s`: (submit -> canceled, the submit request's own time).
    The deadline stored is 2 s from an instant within the request, and the stop follows it within 100 ms."""
    before = redis_seconds(redis_conn)
    response = api.post("/sleepy", {"seconds": 2.9, "tag": tag}, format="json", HTTP_CANCEL_AFTER="2s")
    answered = redis_seconds(redis_conn)
    assert response.status_code == 202, response.content
    job_id = response.json()["job_id"]
    jobs.open_events(job_ids=[job_id])  # its events are written once someone reads them
    ended = wait_until(lambda: canceled_at(redis_conn, job_id), timeout=10, what="the deadline to stop it")
    body = api.get(f"/jobs/{job_id}").json()
    assert body["status"] == "canceled" and "deadline" in body["error"], body
    deadline = float(redis_conn.hget(keys.job(job_id), keys.DEADLINE_FIELD))
    print(f"\n{tag}: deadline - submit {deadline - before:.3f} s, canceled {ended - deadline:.3f} s after it")
    assert before + CANCEL_AFTER <= deadline <= answered + CANCEL_AFTER, (tag, deadline - before)
    assert 0 <= ended - deadline <= LATE, (tag, ended - deadline)
    return ended - before, answered - before


@pytest.mark.timeout(120)
def test_cancel_after_right_after_a_delete_is_never_early_nor_late(api, redis_conn, warm_worker):
    warm_worker("sleepy")
    for attempt in range(4):
        stop_with_delete(api, redis_conn, f"stopped-{attempt}")
        delay, request = cancel_after_delay(api, redis_conn, f"deadline-{attempt}")
        print(f"\nattempt {attempt}: submit -> canceled in {delay:.3f} s (the submit took {request:.3f} s)")
        assert CANCEL_AFTER <= delay <= CANCEL_AFTER + LATE + request, (attempt, delay, request)


@pytest.mark.timeout(120)
def test_cancel_after_on_an_idle_worker_is_never_early_nor_late(api, redis_conn, warm_worker):
    warm_worker("sleepy")
    for attempt in range(3):
        delay, request = cancel_after_delay(api, redis_conn, f"fresh-{attempt}")
        print(f"\nattempt {attempt}: submit -> canceled in {delay:.3f} s (the submit took {request:.3f} s)")
        assert CANCEL_AFTER <= delay <= CANCEL_AFTER + LATE + request, (attempt, delay, request)
