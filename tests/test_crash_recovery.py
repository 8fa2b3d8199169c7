"""No job lost: workers killed with SIGKILL mid-job, their jobs re-queued and finished by others."""

import random
import time

from rq.job import Job
from rq.queue import Queue
from rq.worker import Worker

from tests.conftest import submit, wait_done, wait_until


def test_a_job_whose_worker_is_killed_finishes_once_on_the_other_worker(api, redis_conn, start_worker):
    doomed = start_worker("sleepy")
    job_id = submit(api, "/sleepy", seconds=2, tag="kill-me").json()["job_id"]
    wait_until(lambda: api.get(f"/jobs/{job_id}").json()["status"] == "started", what="the job to start")
    survivor = start_worker("sleepy")
    doomed.process.kill()
    seen = []

    def finished():
        status = submit(api, "/sleepy", seconds=2, tag="kill-me").json()
        if not seen or seen[-1] != status["status"]:
            seen.append(status["status"])
        return status if status["done"] else None

    result = wait_until(finished, timeout=60, interval=0.05, what="the job to finish on the survivor")
    assert result["status"] == "finished" and result["pid"] == survivor.process.pid
    assert seen[-1] == "finished" and set(seen) <= {"started", "queued", "finished"}  # never a 404
    assert len(Job.fetch(job_id, connection=redis_conn).results()) == 1  # one result: it finished once


def test_a_worker_killed_while_cleaning_the_registries_does_not_stall_the_recovery(api, redis_conn, start_worker):
    """RQ's lock on cleaning a queue lasts 15 minutes: a worker killed while it held it would leave
    every dead worker's job of that queue stuck as `started` that long. Ours is taken over."""
    doomed = start_worker("sleepy")
    job_id = submit(api, "/sleepy", seconds=2, tag="killed-cleaning").json()["job_id"]
    wait_until(lambda: api.get(f"/jobs/{job_id}").json()["status"] == "started", what="the job to start")
    (name,) = [w.name for w in Worker.all(connection=redis_conn) if w.pid == doomed.process.pid]
    redis_conn.set(Queue("sleepy", connection=redis_conn).registry_cleaning_key, name, ex=899)  # as it held it
    doomed.process.kill()
    survivor = start_worker("sleepy")
    result = wait_until(
        lambda: (status := api.get(f"/jobs/{job_id}").json())["done"] and status,
        timeout=60,
        what="the dead cleaner's job to be recovered and finished",
    )
    assert result["status"] == "finished" and result["pid"] == survivor.process.pid, result


def test_twenty_jobs_under_random_kills_all_end_finished_or_failed_with_a_reason(api, start_worker):
    rng = random.Random(7)
    inputs = [{"seconds": round(rng.uniform(0.2, 1.0), 2), "tag": f"chaos-{i}"} for i in range(20)]
    for body in inputs:
        submit(api, "/sleepy", **body)
    workers = [start_worker("sleepy"), start_worker("sleepy")]
    kills = 0
    until = time.monotonic() + 8
    while time.monotonic() < until:
        time.sleep(rng.uniform(0.5, 1.5))
        victim = workers.pop(rng.randrange(len(workers)))
        victim.process.kill()
        victim.process.wait()
        kills += 1
        workers.append(start_worker("sleepy"))
    results = [wait_done(api, "/sleepy", timeout=90, **body) for body in inputs]
    print(f"[chaos] {kills} workers killed; outcomes {[r['status'] for r in results].count('finished')} finished")
    for result in results:
        assert result["status"] == "finished" or result["error"].startswith("abandoned"), result


def test_a_job_that_kills_every_worker_fails_after_its_retries_with_the_reason(api, settings, start_worker):
    job_id = submit(api, "/crashing", tag="poison").json()["job_id"]
    deaths = 0
    worker = start_worker("crashing", wait=False)  # it dies as soon as it takes the job

    def failed():
        nonlocal worker, deaths
        if worker.process.poll() is not None:
            deaths += 1
            worker = start_worker("crashing", wait=False)  # as a container's restart policy would
        status = api.get(f"/jobs/{job_id}").json()
        return status if status["done"] else None

    result = wait_until(failed, timeout=90, interval=0.2, what="the poison job to fail")
    assert result["status"] == "failed"
    assert result["error"] == f"abandoned: the worker running it died ({settings.JOB_MAX_RETRIES + 1} attempts)"
    assert deaths == settings.JOB_MAX_RETRIES + 1
