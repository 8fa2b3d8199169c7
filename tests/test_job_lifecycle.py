"""A job's life: deterministic ids, dedup, TTL keep-alive and expiry, results, failures, cancel, load."""

import time

import pytest
from rq.job import Job

from factorize_app.tasks import task_types
from tests.conftest import submit, wait_done, wait_until

# Two 30-digit primes: their product is far beyond what factorint finishes in 2 s.
HARD_SEMIPRIME = 671998030559713968361666935769 * 282174488599599500573849980909


def current_load(api, path="/factorize"):
    return api.get(path, HTTP_ACCEPT="application/json").json()["load"]


def test_ids_are_deterministic_and_a_repeated_post_never_enqueues_twice(api, redis_conn):
    ids = {submit(api, number=408216).json()["job_id"] for _ in range(5)}
    ids.add(submit(api, number="408216").json()["job_id"])
    assert len(ids) == 1
    (job_id,) = ids
    assert job_id.startswith("factorization-")
    assert redis_conn.llen("rq:queue:factorization") == 1
    assert submit(api, number=408217).json()["job_id"] != job_id
    assert submit(api, "/primes", n=408216).json()["job_id"].startswith("primes-")


def test_get_job_answers_the_same_body_as_a_repeated_post(api, start_worker):
    posted = submit(api, number=360).json()
    by_id = api.get(f"/jobs/{posted['job_id']}")
    assert by_id.status_code == 202
    assert by_id.json() == posted
    start_worker("factorization")
    done = wait_done(api, number=360)
    assert api.get(f"/jobs/{posted['job_id']}/").json() == done


def test_polling_keeps_a_queued_job_alive_and_an_abandoned_one_expires_unrun(api, settings, redis_conn, start_worker):
    settings.JOB_TTL = 2
    job_id = submit(api, number=1001).json()["job_id"]
    key = Job.key_for(job_id)
    # Poll (by POST and by GET) for twice the TTL: the job stays queued.
    for i in range(8):
        time.sleep(0.5)
        response = submit(api, number=1001) if i % 2 else api.get(f"/jobs/{job_id}")
        assert response.json()["status"] == "queued"
        assert 0 < redis_conn.ttl(key) <= 2
    # Nobody polls: it expires, and a worker draining the queue never runs it.
    wait_until(lambda: not redis_conn.exists(key), timeout=5, what="the job to expire")
    assert api.get(f"/jobs/{job_id}").status_code == 404
    assert redis_conn.llen("rq:queue:factorization") == 1  # the id lingers in RQ's list...
    assert current_load(api) == 0  # ...but is not counted
    worker = start_worker("factorization", burst=True)
    assert worker.process.wait(60) == 0
    assert not redis_conn.exists(f"rq:results:{job_id}")
    # A POST after expiry enqueues it afresh, and it runs once.
    assert submit(api, number=1001).json()["status"] == "queued"


def test_an_expired_then_resubmitted_job_runs_exactly_once(api, settings, redis_conn, start_worker):
    settings.JOB_TTL = 1
    job_id = submit(api, "/sleepy", seconds=0, tag="once").json()["job_id"]
    wait_until(lambda: not redis_conn.exists(Job.key_for(job_id)), timeout=5, what="expiry")
    settings.JOB_TTL = 60
    submit(api, "/sleepy", seconds=0, tag="once")
    assert redis_conn.lrange("rq:queue:sleepy", 0, -1) == [job_id.encode()] * 2
    worker = start_worker("sleepy", burst=True)
    assert worker.process.wait(60) == 0
    assert wait_done(api, "/sleepy", seconds=0, tag="once")["status"] == "finished"
    assert redis_conn.xlen(f"rq:results:{job_id}") == 1


def test_results_are_cached_and_answer_without_running_again(api, redis_conn, start_worker):
    worker = start_worker("factorization")
    done = wait_done(api, number=2**64 + 1)
    assert done["factorization"] == [[274177, 1], [67280421310721, 1]]
    worker.stop()
    again = submit(api, number=2**64 + 1)
    assert again.status_code == 200
    assert again.json() == done
    assert redis_conn.llen("rq:queue:factorization") == 0
    assert redis_conn.xlen(f"rq:results:{done['job_id']}") == 1


def test_a_failed_job_is_done_with_a_one_line_error(api, warm_worker):
    warm_worker("failing")
    body = wait_done(api, "/failing", tag="bad")
    assert body == {
        "done": True,
        "tag": "bad",
        "echo": None,
        "pid": None,
        "load": 0,
        "job_id": body["job_id"],
        "status": "failed",
        "error": "ValueError: cannot handle bad",
        "progress": None,
    }
    assert submit(api, "/failing", tag="bad").status_code == 200


def test_a_job_over_its_timeout_fails_cleanly_and_the_worker_goes_on(api, warm_worker):
    worker = warm_worker("sleepy")
    body = wait_done(api, "/sleepy", seconds=20, tag="slow")  # the type's timeout is 3 s
    assert body["status"] == "failed"
    assert body["error"] == "timed out after 3 s"
    after = wait_done(api, "/sleepy", seconds=0, tag="next")
    assert after["status"] == "finished"
    assert after["pid"] == worker.process.pid


def test_a_number_too_hard_to_factor_in_time_fails_with_timed_out(api, settings, warm_worker):
    settings.JOB_TIMEOUT = 2
    warm_worker("factorization")
    body = wait_done(api, number=HARD_SEMIPRIME, timeout=60)
    assert body["status"] == "failed"
    assert body["error"] == "timed out after 2 s"
    assert wait_done(api, number=408216)["factorization_str"] == "2^3 3^1 73^1 233^1"


def test_cancel_a_queued_job(api, redis_conn, start_worker):
    job_id = submit(api, number=4242).json()["job_id"]
    assert current_load(api) == 1
    assert api.delete(f"/jobs/{job_id}").status_code == 204
    cancelled = api.get(f"/jobs/{job_id}")  # pollers see what happened; it is not forgotten
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "canceled"
    assert api.delete(f"/jobs/{job_id}").status_code == 409
    assert current_load(api) == 0
    # Its id leaves RQ's list when it reaches the head (no scan of the list): it never runs.
    start_worker("factorization")
    done = wait_done(api, number=99)
    assert redis_conn.llen("rq:queue:factorization") == 0
    assert api.get(f"/jobs/{job_id}").json()["status"] == "canceled"
    response = api.delete(f"/jobs/{done['job_id']}")
    assert response.status_code == 409
    assert response.json()["status"] == "finished"


def test_load_counts_live_queued_and_running_jobs_only(api, settings, redis_conn, start_worker):
    settings.JOB_TTL = 2
    loads = [submit(api, number=n).json()["load"] for n in (11, 12, 13)]
    assert loads == [1, 2, 3]
    # Keep only 13 alive; 11 and 12 expire.
    for _ in range(8):
        time.sleep(0.5)
        submit(api, number=13)
    assert redis_conn.llen("rq:queue:factorization") == 3
    assert current_load(api) == 1
    # A running job counts as load until it finishes.
    settings.JOB_TTL = 60
    start_worker("sleepy")
    submit(api, "/sleepy", seconds=2, tag="running")
    wait_until(lambda: submit(api, "/sleepy", seconds=2, tag="running").json()["status"] == "started", timeout=10)
    assert current_load(api, "/sleepy") == 1
    queued = submit(api, "/sleepy", seconds=0, tag="behind").json()
    assert queued["status"] == "queued"
    assert queued["load"] == 2
    wait_done(api, "/sleepy", seconds=0, tag="behind")
    assert current_load(api, "/sleepy") == 0


def test_queues_endpoint_counts_each_task_type(api, warm_worker):
    warm_worker("failing", "primes")
    wait_done(api, "/failing", tag="a")
    wait_done(api, "/primes", n=100)
    submit(api, number=77)
    stats = {entry["name"]: entry for entry in api.get("/queues").json()}
    assert stats["factorization"] == {
        "name": "factorization",
        "queued": 1,
        "started": 0,
        "finished": 0,
        "failed": 0,
        "canceled": 0,
        "aborted": 0,
        "workers": 0,
        "workers_lost": 0,
        "setup_error": None,
    }
    assert stats["primes"]["finished"] == 1
    assert stats["primes"]["workers"] == 1
    assert stats["failing"]["failed"] == 1
    assert set(stats) == {t.name for t in task_types()}
    assert {"factorization", "primes", "digits", "slow_setup", "sleepy", "failing", "batched"} <= set(stats)


@pytest.mark.parametrize("job_id", ["primes-" + "0" * 32, "../etc", "rq:job:x"])
def test_job_ids_cannot_reach_other_keys(api, job_id):
    assert api.get(f"/jobs/{job_id}").status_code == 404
