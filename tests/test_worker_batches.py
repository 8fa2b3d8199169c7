"""Batch-taking workers: many jobs per round trip, recorded on RQ's own hashes, registries and results."""

import signal

from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.worker import Worker

from factorize_app import jobs
from factorize_app.jobs import keys
from tests.conftest import submit, wait_done, wait_until


def test_a_batch_handler_gets_many_inputs_at_once_and_rq_sees_every_job(api, redis_conn, start_worker):
    xs = range(100, 300)  # no 13 among them
    ids = [submit(api, "/batched", x=x).json()["job_id"] for x in xs]
    worker = start_worker("batched", burst=True)
    assert worker.process.wait(60) == 0
    results = [wait_done(api, "/batched", x=x) for x in xs]
    assert [r["double"] for r in results] == [2 * x for x in xs]
    assert max(r["batch_size"] for r in results) > 1
    # RQ's own records, as the dashboard and `rq info` read them.
    assert FinishedJobRegistry("batched", connection=redis_conn).count == 200
    assert StartedJobRegistry("batched", connection=redis_conn).count == 0
    job = Job.fetch(ids[7], connection=redis_conn)
    assert job.get_status() == "finished"
    assert job.return_value() == {"double": 214, "batch_size": results[7]["batch_size"]}
    assert job.latest_result().type == Result.Type.SUCCESSFUL
    assert job.worker_name and job.ended_at and job.started_at
    assert redis_conn.ttl(job.key) > 0  # kept for RESULT_TTL, then gone


def test_in_one_batch_only_the_watched_job_gets_events_and_the_others_no_stream(api, redis_conn, start_worker):
    """Events are appended per batch only when one of its jobs' streams is open, and then only to
    the open ones: a job nobody watches gets no stream even in a batch with a watched one."""
    ids = [submit(api, "/batched", x=x).json()["job_id"] for x in range(400, 420)]
    watched = ids[7]
    jobs.open_events(job_ids=[watched])
    worker = start_worker("batched", burst=True, WORKER_BATCH_SECONDS="100")
    assert worker.process.wait(60) == 0
    results = [wait_done(api, "/batched", x=x) for x in range(400, 420)]
    assert max(r["batch_size"] for r in results) > 1  # they were taken and recorded together
    statuses = [fields[b"status"].decode() for _, fields in redis_conn.xrange(keys.events(watched))]
    assert statuses[-2:] == ["started", "finished"], statuses
    assert not any(redis_conn.exists(keys.events(job_id)) for job_id in ids if job_id != watched)


def test_a_failing_input_fails_alone_when_the_batch_handler_raises(api, redis_conn, start_worker):
    for x in range(10, 17):
        submit(api, "/batched", x=x)
    start_worker("batched", WORKER_BATCH_SECONDS="100")
    results = {x: wait_done(api, "/batched", x=x) for x in range(10, 17)}
    assert results[13]["status"] == "failed"
    assert results[13]["error"] == "ValueError: 13 is unlucky"
    assert all(results[x]["double"] == 2 * x for x in range(10, 17) if x != 13)
    assert FailedJobRegistry("batched", connection=redis_conn).count == 1
    failed = Job.fetch(results[13]["job_id"], connection=redis_conn).latest_result()
    assert failed.type == Result.Type.FAILED and "13 is unlucky" in failed.exc_string
    counts = Worker.all(connection=redis_conn)[0]
    assert (counts.successful_job_count, counts.failed_job_count) == (6, 1)


def test_a_job_that_overruns_its_timeout_fails_and_the_rest_of_its_batch_runs(api, start_worker):
    submit(api, "/sleepy", seconds=0.1, tag="before")
    submit(api, "/sleepy", seconds=10, tag="too-long")  # the type's job_timeout is 3 s
    submit(api, "/sleepy", seconds=0.1, tag="after")
    start_worker("sleepy", WORKER_BATCH_SECONDS="100")
    assert wait_done(api, "/sleepy", seconds=10, tag="too-long")["error"] == "timed out after 3 s"
    assert wait_done(api, "/sleepy", seconds=0.1, tag="before")["status"] == "finished"
    assert wait_done(api, "/sleepy", seconds=0.1, tag="after")["status"] == "finished"


def test_a_worker_killed_mid_batch_loses_none_of_it(api, redis_conn, start_worker):
    for i in range(8):
        submit(api, "/sleepy", seconds=0.5, tag=f"k{i}")
    doomed = start_worker("sleepy", WORKER_BATCH_SECONDS="100")
    started = StartedJobRegistry("sleepy", connection=redis_conn)
    wait_until(lambda: started.count >= 6, timeout=30, what="a batch to be taken")
    doomed.process.kill()  # SIGKILL: no chance to hand anything back
    doomed.process.wait()
    rescuer = start_worker("sleepy")
    results = [wait_done(api, "/sleepy", seconds=0.5, tag=f"k{i}", timeout=60) for i in range(8)]
    assert {r["status"] for r in results} == {"finished"}
    assert rescuer.process.pid in {r["pid"] for r in results}  # the rescuer ran the killed batch's jobs
    assert FinishedJobRegistry("sleepy", connection=redis_conn).count == 8
    assert started.count == 0


def test_a_warm_stop_finishes_the_running_job_and_hands_the_rest_of_the_batch_back(api, redis_conn, start_worker):
    for i in range(6):
        submit(api, "/sleepy", seconds=1, tag=f"w{i}")
    worker = start_worker("sleepy", WORKER_BATCH_SECONDS="100")
    started = StartedJobRegistry("sleepy", connection=redis_conn)
    wait_until(lambda: started.count == 6, timeout=30, what="the whole batch to be taken")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(10) == 0  # long before the batch's 6 s
    statuses = [submit(api, "/sleepy", seconds=1, tag=f"w{i}").json()["status"] for i in range(6)]
    assert statuses.count("finished") in (1, 2)
    assert set(statuses) <= {"finished", "queued"}
    # Handed back to RQ's list (an id taken in fair order may also linger there until it reaches the head).
    assert len(set(redis_conn.lrange("rq:queue:sleepy", 0, -1))) == statuses.count("queued")
    assert started.count == 0
    start_worker("sleepy")
    assert {wait_done(api, "/sleepy", seconds=1, tag=f"w{i}")["status"] for i in range(6)} == {"finished"}


HARD_SEMIPRIME = 671998030559713968361666935769 * 282174488599599500573849980909  # minutes for sympy


def test_jobs_held_up_by_a_slow_one_go_to_another_worker_and_finished_ones_show_at_once(api, redis_conn, start_worker):
    """The issue's case: 30 easy numbers, a product of two 30-digit primes, 30 more, all taken by
    one worker. The first 30 are seen done while the hard one runs; the last 30 go back to the
    queue and a second worker finishes them, while the hard one is still running."""
    first = start_worker("factorization")
    for number in range(1000, 1050):  # teach the worker that factorizations are quick
        wait_done(api, number=number)
    easy_before, easy_after = list(range(2000, 2030)), list(range(3000, 3030))
    response = api.post("/factorize/batch", {"numbers": [*easy_before, HARD_SEMIPRIME, *easy_after]}, format="json")
    hard_id = response.json()["results"][30]["job_id"]
    wait_until(lambda: Job.fetch(hard_id, connection=redis_conn).get_status() == "started", timeout=30)
    wait_until(lambda: all(submit(api, number=n).json()["done"] for n in easy_before), timeout=10, what="the first 30")
    second = start_worker("factorization")
    wait_until(lambda: all(submit(api, number=n).json()["done"] for n in easy_after), timeout=60, what="the last 30")
    assert Job.fetch(hard_id, connection=redis_conn).get_status() == "started"  # still running on the first
    assert "handed back jobs held up by a long one" in first.log
    finished_by = {
        Job.fetch(submit(api, number=n).json()["job_id"], connection=redis_conn).worker_name for n in easy_after
    }
    assert len(finished_by) >= 1 and finished_by != {Job.fetch(hard_id, connection=redis_conn).worker_name}
    first.stop(signal.SIGKILL)
    second.stop()


def test_a_batch_handler_waits_a_moment_to_fill_its_batch(api, warm_worker):
    """Jobs submitted one by one, a few milliseconds apart, while the worker idles: without the
    type's max_batch_delay each would be its own batch of one."""
    warm_worker("batched")
    for x in range(500, 520):
        submit(api, "/batched", x=x)
    results = [wait_done(api, "/batched", x=x) for x in range(500, 520)]
    assert max(result["batch_size"] for result in results) > 1


def test_the_batch_size_follows_the_median_cost_of_recent_jobs():
    from factorize_app import jobs
    from factorize_app.worker import CostEstimates

    def outcome(seconds: float) -> jobs.JobOutcome:
        return jobs.JobOutcome(job=None, status=jobs.FINISHED, seconds=seconds)

    costs = CostEstimates()
    assert costs.seconds_per_job("primes") is None  # never run here: no guess at all
    costs.learn("primes", [outcome(0.01)] * 20)
    costs.learn("primes", [outcome(0.000001)])  # one unusually fast job
    assert costs.seconds_per_job("primes") == 0.01
