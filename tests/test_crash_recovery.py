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


def test_twenty_jobs_under_random_kills_all_end_finished_or_failed_with_a_reason(
    api, redis_conn, settings, start_worker
):
    """Workers SIGKILLed at random while they run the jobs: every job ends, and each ending is the
    one its history calls for. A finished job ran to its end once (one result, its own input's
    answer, from one of the test's workers), whether or not a kill interrupted it first; a failed
    one was interrupted on every one of its attempts and says so. And the kills did interrupt jobs."""
    rng = random.Random(7)
    inputs = [{"seconds": round(rng.uniform(0.2, 1.0), 2), "tag": f"chaos-{i}"} for i in range(20)]
    for body in inputs:
        submit(api, "/sleepy", **body)
    workers = [start_worker("sleepy"), start_worker("sleepy")]
    pids = {worker.process.pid for worker in workers}
    kills = 5
    for _ in range(kills):
        time.sleep(rng.uniform(0.5, 1.5))  # the chaos itself: kills at random moments, not a wait
        victim = workers.pop(rng.randrange(len(workers)))
        victim.process.kill()
        victim.process.wait()
        workers.append(start_worker("sleepy"))
        pids.add(workers[-1].process.pid)
    results = [wait_done(api, "/sleepy", timeout=90, **body) for body in inputs]
    jobs = [Job.fetch(result["job_id"], connection=redis_conn) for result in results]
    retries = settings.JOB_MAX_RETRIES
    interrupted = [job for job in jobs if (job.retries_left if job.retries_left is not None else retries) < retries]
    finished = [result for result in results if result["status"] == "finished"]
    print(f"[chaos] {kills} workers killed; {len(interrupted)} jobs interrupted; {len(finished)} of 20 finished")
    assert interrupted, "no kill landed on a running job: the chaos tested nothing"
    for body, result, job in zip(inputs, results, jobs, strict=True):
        if result["status"] == "finished":
            assert result["slept"] == body["seconds"] and result["pid"] in pids, result
            assert len(job.results()) == 1, f"{result['job_id']} finished more than once"
        else:
            assert result["status"] == "failed", result
            assert result["error"] == f"abandoned: the worker running it died ({retries + 1} attempts)", result
            assert job.retries_left == 0, "failed as abandoned before its retries were spent"


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
