"""Workers: a model loaded once per process, jobs run in that process, routing by queue."""

import signal
import time

from django.conf import settings
from rq.worker import Worker

from factorize_app.tasks import task_types
from tests.conftest import queue_of, submit, wait_done, wait_until
from tests.task_types import SETUP_COUNTER


def test_setup_runs_once_per_worker_and_jobs_run_warm_in_its_process(api, redis_conn, start_worker):
    worker = start_worker("slow_setup")  # returns once registered, i.e. after its 1 s setup
    assert int(redis_conn.get(SETUP_COUNTER)) == 1
    for i in range(20):
        submit(api, "/slow-setup", tag=f"job-{i}")
    results = [wait_done(api, "/slow-setup", tag=f"job-{i}") for i in range(20)]
    assert [r["echo"] for r in results] == [f"job-{i}" for i in range(20)]
    assert {r["pid"] for r in results} == {worker.process.pid}  # no fork per job
    assert int(redis_conn.get(SETUP_COUNTER)) == 1


def test_a_worker_for_primes_only_never_takes_a_factorization_job(api, redis_conn, start_worker):
    factor_id = submit(api, number=408216).json()["job_id"]
    start_worker("primes")
    assert wait_done(api, "/primes", n=10**7) == {
        "done": True,
        "n": 10**7,
        "count": 664579,
        "largest": 9999991,
        "load": 0,
        "job_id": wait_done(api, "/primes", n=10**7)["job_id"],
        "status": "finished",
        "error": None,
        "progress": None,
    }
    for n in range(2, 40):
        wait_done(api, "/primes", n=n)
    assert api.get(f"/jobs/{factor_id}").json()["status"] == "queued"
    assert redis_conn.llen("rq:queue:factorization") == 1
    start_worker("factorization")
    assert wait_done(api, number=408216)["factorization_str"] == "2^3 3^1 73^1 233^1"


def test_a_failing_job_does_not_stop_the_worker(api, warm_worker):
    worker = warm_worker("failing", "sleepy")
    assert wait_done(api, "/failing", tag="x")["status"] == "failed"
    assert wait_done(api, "/sleepy", seconds=0, tag="y")["pid"] == worker.process.pid
    assert worker.process.poll() is None


def test_rqworker_without_queue_names_listens_to_every_task_type_and_delivers_webhooks(redis_conn, warm_worker):
    started = warm_worker()
    wait_until(lambda: len(Worker.all(connection=redis_conn)) == 2, what="the webhooks worker beside it")
    by_queues = {tuple(worker.queue_names()): worker for worker in Worker.all(connection=redis_conn)}
    model_worker = by_queues[tuple(task_type.name for task_type in task_types())]
    assert {"factorization", "primes", "sleepy"} <= set(model_worker.queue_names())
    assert model_worker.pid == started.process.pid
    # Deliveries never run in a model worker's process: the webhooks queue has one of its own.
    assert by_queues[("webhooks",)].pid != started.process.pid


def test_a_killed_worker_stops_counting_within_three_heartbeats_and_leaves_the_listing(api, redis_conn, start_worker):
    survivor = start_worker("factorization")
    doomed = start_worker("factorization")
    assert queue_of(api, "factorization")["workers"] == 2
    doomed.stop(signal.SIGKILL)  # no chance to unregister: RQ's key would live for 420 s
    killed_at = time.monotonic()
    wait_until(lambda: queue_of(api, "factorization")["workers"] == 1, timeout=10, what="/queues to drop it")
    # WORKER_HEARTBEAT is 1 s in the tests: counted live for at most 3 beats (plus a poll's slack).
    assert time.monotonic() - killed_at < 3 * settings.WORKER_HEARTBEAT + 1.5
    # The survivor's maintenance unregisters it, so RQ's (and the dashboard's) listing drops it too.
    wait_until(lambda: len(Worker.all(connection=redis_conn)) == 1, timeout=15, what="the listing to drop it")
    (left,) = Worker.all(connection=redis_conn)
    assert left.pid == survivor.process.pid
    assert redis_conn.scard("rq:workers:factorization") == 1
    assert wait_done(api, number=408216)["factorization_str"] == "2^3 3^1 73^1 233^1"
