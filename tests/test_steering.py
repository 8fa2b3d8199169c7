"""Steering jobs: stop a running one in-process, cancel a queued one, Cancel-After deadlines, retry."""

from __future__ import annotations

import signal
import time

import pytest
from rq.worker import Worker
from sympy import nextprime

from factorize_app import jobs
from tests.conftest import queue_of, submit, wait_done, wait_until

HARD = nextprime(10**19) * nextprime(3 * 10**20)  # seconds of ECM: it is surely running when stopped


def status_of(api, job_id: str) -> dict:
    return api.get(f"/jobs/{job_id}").json()


def test_delete_of_a_running_job_stops_it_in_process_and_the_worker_takes_the_next(api, redis_conn, warm_worker):
    worker = warm_worker("factorization")
    job_id = submit(api, number=HARD).json()["job_id"]
    wait_until(lambda: status_of(api, job_id)["status"] == "started", timeout=30, what="the hard job to start")
    asked = time.monotonic()
    response = api.delete(f"/jobs/{job_id}")
    assert response.status_code == 202 and response.json()["status"] == "started"
    stopped = wait_until(lambda: (body := status_of(api, job_id))["done"] and body, timeout=10, what="the stop")
    print(f"\nstop: DELETE to canceled seen in {time.monotonic() - asked:.3f} s")
    assert stopped["status"] == "canceled" and stopped["error"] == "canceled"
    assert wait_done(api, number=408216)["status"] == "finished"  # the next job, on the same worker
    (registered,) = Worker.all(connection=redis_conn)
    assert registered.pid == worker.process.pid and worker.process.poll() is None
    assert api.delete(f"/jobs/{job_id}").status_code == 409


def test_delete_of_a_queued_job_cancels_it_and_pollers_see_it(api):
    job_id = submit(api, number=31337).json()["job_id"]
    assert api.delete(f"/jobs/{job_id}").status_code == 204
    body = status_of(api, job_id)
    assert (body["done"], body["status"], body["error"]) == (True, "canceled", "canceled")
    assert api.delete(f"/jobs/{job_id}").status_code == 409
    assert queue_of(api, "factorization")["canceled"] == 1


def test_cancel_after_aborts_a_queued_job_and_stops_a_running_one(api, redis_conn, start_worker):
    queued = api.post("/factorize", {"number": 4711}, format="json", HTTP_CANCEL_AFTER="1s").json()["job_id"]
    jobs.open_events(job_ids=[queued])  # its events are written once someone reads them
    again = api.post("/factorize", {"number": 4711}, format="json", HTTP_CANCEL_AFTER="1h")  # polls: no new deadline
    assert again.json()["job_id"] == queued
    aborted = wait_until(lambda: (body := status_of(api, queued))["done"] and body, timeout=10, what="the abort")
    assert aborted["status"] == "aborted" and aborted["error"].startswith("aborted:")
    (event,) = [fields for _, fields in redis_conn.xrange(f"factorize:events:{queued}")]
    assert event[b"status"] == b"aborted"  # pushed to open streams at once
    assert redis_conn.zscore("rq:canceled:factorization", queued)  # the dashboard counts it
    start_worker("sleepy")
    running = api.post("/sleepy", {"seconds": 2.9, "tag": "late"}, format="json", HTTP_CANCEL_AFTER="1").json()
    ended = wait_until(lambda: (body := status_of(api, running["job_id"]))["done"] and body, timeout=10)
    assert ended["status"] == "canceled" and "deadline" in ended["error"]
    factorization = queue_of(api, "factorization")
    assert (factorization["aborted"], factorization["canceled"]) == (1, 0)


@pytest.mark.parametrize("value", ["", "soon", "0", "-5", "1.5", "1d", "9" * 5000, "1h99999999m", "٣"])
def test_a_bad_cancel_after_is_a_400_naming_the_header(api, value):
    response = api.post(
        "/factorize", {"number": 4712}, format="json", HTTP_CANCEL_AFTER=value.encode().decode("latin-1")
    )
    assert response.status_code == 400 and "Cancel-After" in response.json(), (value[:10], response.content)


def test_retry_queues_a_failed_job_again_under_the_same_id(api, warm_worker):
    warm_worker("failing", "factorization")
    failed = wait_done(api, "/failing", tag="again")
    assert failed["status"] == "failed"
    retried = api.post(f"/jobs/{failed['job_id']}/retry")
    assert retried.status_code in (200, 202) and retried.json()["job_id"] == failed["job_id"]
    assert wait_done(api, "/failing", tag="again")["status"] == "failed"  # it ran again, and failed again
    finished = wait_done(api, number=97)
    assert api.post(f"/jobs/{finished['job_id']}/retry").status_code == 409


def test_a_stop_asked_while_its_worker_is_dead_is_not_lost(api, redis_conn, start_worker):
    """The stop request stays on the job: when RQ's cleanup queues it again after its lease ran
    out, the next worker ends it canceled instead of running it."""
    doomed = start_worker("factorization")
    job_id = submit(api, number=HARD).json()["job_id"]
    wait_until(lambda: status_of(api, job_id)["status"] == "started", timeout=30, what="the hard job to start")
    doomed.stop(signal.SIGKILL)
    assert api.delete(f"/jobs/{job_id}").status_code == 202  # still started: nobody knows it died yet
    start_worker("factorization")
    ended = wait_until(lambda: (body := status_of(api, job_id))["done"] and body, timeout=60, what="the cancel")
    assert (ended["status"], ended["error"]) == ("canceled", "canceled")


def test_a_batch_handler_job_stopped_mid_call_ends_canceled_and_the_others_finish(api, warm_worker):
    warm_worker("slow_batch")
    jobs_ = [api.post("/slow-batch", {"x": x}, format="json").json()["job_id"] for x in range(4)]
    wait_until(lambda: status_of(api, jobs_[1])["status"] == "started", timeout=30, what="the batch to start")
    assert api.delete(f"/jobs/{jobs_[1]}").status_code == 202
    ended = [wait_until(lambda j=j: (b := status_of(api, j))["done"] and b, timeout=30) for j in jobs_]
    assert [body["status"] for body in ended] == ["finished", "canceled", "finished", "finished"]
