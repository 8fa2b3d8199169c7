"""A full or read-only Redis is an outage to ride out: the test's own redis-server, capped with
--maxmemory, behind real web servers and workers.

Submits answer 503 JSON naming the cause (at the high-water mark, and when Redis itself refuses),
through the lean lane and DRF alike; polls keep answering; a worker started while Redis refuses
writes waits and then serves; a worker whose results cannot be recorded keeps them and records
them once Redis takes writes, each job finished exactly once; every child process rides out write
refusals; a fill-up run finishes every accepted job and heals by itself. Outages longer than
JOB_TTL and /readyz's bound: test_redis_outage_bounds.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from rq.worker import Worker

from tests.conftest import free_port, poll_until_done, wait_until, web_server
from tests.test_redis_outage import OwnRedis

MAXMEMORY = 8 * 1024 * 1024
FILLER = 64 * 1024  # bytes per filler key
BASE_ENV = {"THROTTLE_SUBMIT": "", "THROTTLE_POLL": "", "JOB_TTL": "300", "REDIS_SOCKET_TIMEOUT": "2"}


@pytest.fixture(scope="module")
def capped(tmp_path_factory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("capped-redis"), "--maxmemory", str(MAXMEMORY), "--appendonly", "no")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh(capped: OwnRedis) -> Iterator[OwnRedis]:
    """The capped Redis, emptied (and a master, with room) before and after each test."""
    conn = capped.client()

    def reset() -> None:
        conn.replicaof("NO", "ONE")
        conn.config_set("maxmemory", MAXMEMORY)
        conn.flushall()

    reset()
    yield capped
    reset()


@pytest.fixture(scope="module")
def admission_web(capped: OwnRedis) -> Iterator[str]:
    """A web server refusing new jobs past 60 % of maxmemory."""
    with web_server(capped.url, REDIS_MEMORY_HIGH_WATER="0.6", **BASE_ENV) as url:
        yield url


@pytest.fixture(scope="module")
def web(capped: OwnRedis) -> Iterator[str]:
    """A web server with no high-water mark of its own: only Redis refuses."""
    with web_server(capped.url, REDIS_MEMORY_HIGH_WATER="2", **BASE_ENV) as url:
        yield url


def start_on(start_worker, server: OwnRedis, *queues: str, **env: str):
    """A worker on `server` (start_worker waits on the test database), once it has registered."""
    conn = server.client()
    before = Worker.count(connection=conn)
    worker = start_worker(*queues, wait=False, TEST_REDIS_URL=server.url, **{**BASE_ENV, **env})
    wait_until(lambda: Worker.count(connection=conn) > before or worker.process.poll() is not None, timeout=60,
               what="the worker to register")  # fmt: skip
    assert worker.process.poll() is None, worker.log[-3000:]
    return worker


def used_fraction(conn: redis.Redis) -> float:
    info = conn.info("memory")
    return info["used_memory"] / info["maxmemory"]


def fill(conn: redis.Redis, up_to: float | None = None) -> None:
    """Write filler keys until Redis uses `up_to` of its maxmemory, or (None) until it refuses
    even a small write (big ones are refused while the request itself takes memory)."""
    i = 0
    for size in (FILLER, 1024, 16):
        while up_to is None or used_fraction(conn) < up_to:
            try:
                conn.set(f"filler:{i}", b"x" * size)
            except redis.exceptions.OutOfMemoryError:
                break
            i += 1
        if up_to is not None:
            return


def unfill(conn: redis.Redis) -> None:
    keys = list(conn.scan_iter("filler:*", count=1000))
    if keys:
        conn.delete(*keys)


def refuse(conn: redis.Redis, how: str) -> None:
    """Make Redis refuse every write: full (its maxmemory lowered below what it holds, so that no
    write slips in as client buffers come and go), or read-only (a replica of a master that is
    not there: it keeps its data and serves reads)."""
    if how == "full":
        fill(conn, up_to=0.5)
        conn.config_set("maxmemory", int(conn.info("memory")["used_memory"] * 0.8))
    else:
        conn.replicaof("127.0.0.1", free_port())
    with pytest.raises((redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)):
        conn.set("probe", "x")


def allow(conn: redis.Redis, how: str) -> None:
    if how == "full":
        conn.config_set("maxmemory", MAXMEMORY)
        unfill(conn)
    else:
        conn.replicaof("NO", "ONE")
    conn.set("probe", "x")


def assert_refused(response: requests.Response, reason: str) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["reason"] == reason, body
    expected = {"full": "the job queue is full", "read-only": "the job queue is read-only"}[reason]
    assert body["detail"].startswith(expected), body
    assert int(response.headers["Retry-After"]) > 0


def submits(url: str, number: int) -> list[requests.Response]:
    """A new job through the lean lane (a plain JSON client), through DRF (a Prefer header sends
    it there), and as a batch (always DRF)."""
    return [
        requests.post(f"{url}/factorize", json={"number": number}, timeout=10),
        requests.post(f"{url}/factorize", json={"number": number + 1}, headers={"Prefer": "wait=0"}, timeout=10),
        requests.post(f"{url}/factorize/batch", json={"items": [{"number": number + 2}]}, timeout=10),
    ]


def metric(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)]
    return sum(values)


@pytest.mark.timeout(240)
def test_submits_are_refused_at_the_high_water_mark_and_polls_still_answer(fresh, admission_web, start_worker):
    url, conn = admission_web, fresh.client()
    start_on(start_worker, fresh, "factorization")
    done = poll_until_done(lambda: requests.post(f"{url}/factorize", json={"number": 408216}, timeout=10))
    start_on(start_worker, fresh, "primes")
    conn.set("rq:suspended", 1)  # ...nor this one: it stays queued
    queued = requests.post(f"{url}/primes", json={"n": 12345}, timeout=10).json()
    assert queued["status"] == "queued", queued
    refused_before = metric(url, 'factorize_refused_submits_total{reason="full"}')

    fill(conn, up_to=0.7)  # past the 0.6 mark, with room left in Redis
    numbers = iter(range(10**6, 10**7))  # new inputs each time: a repeated one is a poll
    wait_until(lambda: requests.post(f"{url}/factorize", json={"number": next(numbers)}, timeout=10).status_code == 503,
               timeout=10, what="admission to see the memory reading")  # fmt: skip
    for response in submits(url, 1000):
        assert_refused(response, "full")
    # Polls, repeated submits of known inputs and batches of them still answer.
    assert requests.get(f"{url}/jobs/{queued['job_id']}", timeout=10).json()["status"] == "queued"
    assert requests.post(f"{url}/primes", json={"n": 12345}, timeout=10).status_code == 202
    again = requests.post(f"{url}/factorize", json={"number": 408216}, timeout=10)
    assert again.status_code == 200 and {**again.json(), "load": 0} == {**done, "load": 0}
    assert requests.get(f"{url}/jobs/{done['job_id']}", timeout=10).json()["status"] == "finished"
    batch = requests.post(f"{url}/factorize/batch", json={"items": [{"number": 408216}]}, timeout=10)
    assert batch.status_code == 200, batch.text
    ready = requests.get(f"{url}/readyz", timeout=10).json()
    assert ready["status"] == "degraded" and ready["reason"] == "full", ready
    assert metric(url, 'factorize_refused_submits_total{reason="full"}') >= refused_before + 4
    assert metric(url, "factorize_redis_maxmemory_bytes") == MAXMEMORY
    assert metric(url, "factorize_redis_used_memory_bytes") >= 0.6 * MAXMEMORY

    unfill(conn)
    conn.delete("rq:suspended")
    fresh_job = wait_until(
        lambda: (
            (r := requests.post(f"{url}/factorize", json={"number": next(numbers)}, timeout=10)).status_code != 503
            and r
        ),
        timeout=10,
        what="submits to be admitted again",
    )
    assert fresh_job.status_code in (200, 202), fresh_job.text
    assert requests.get(f"{url}/readyz", timeout=10).json()["status"] == "ok"


@pytest.mark.parametrize("how", ["full", "read-only"])
@pytest.mark.timeout(240)
def test_submits_are_refused_when_redis_itself_refuses_and_polls_still_answer(fresh, web, how):
    url, conn = web, fresh.client()
    queued = requests.post(f"{url}/primes", json={"n": 777}, timeout=10).json()
    assert queued["status"] == "queued"
    refuse(conn, how)
    for response in submits(url, 5000):
        assert_refused(response, how)
    poll = requests.get(f"{url}/jobs/{queued['job_id']}", timeout=10)
    assert poll.status_code == 202 and poll.json()["status"] == "queued", poll.text
    # Not an event stream, which could not open the job's events (it would miss them): 503, as a submit.
    stream = requests.get(f"{url}/jobs/{queued['job_id']}", headers={"Accept": "text/event-stream"}, timeout=10)
    assert_refused(stream, how)
    assert requests.post(f"{url}/primes", json={"n": 777}, timeout=10).json()["status"] == "queued"
    ready = requests.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["reason"] == how, ready.text
    allow(conn, how)
    assert requests.post(f"{url}/factorize", json={"number": 5000}, timeout=10).status_code == 202
    assert requests.get(f"{url}/readyz", timeout=10).json()["status"] == "ok"


def state_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "refuses writes" in line or "serves again" in line]


@pytest.mark.parametrize("how", ["full", "read-only"])
@pytest.mark.timeout(240)
def test_a_worker_started_while_redis_refuses_writes_waits_then_serves(fresh, web, start_worker, how):
    url, conn = web, fresh.client()
    job = requests.post(f"{url}/sleepy", json={"seconds": 0, "tag": how}, timeout=10).json()
    refuse(conn, how)
    worker = start_worker("sleepy", wait=False, TEST_REDIS_URL=fresh.url, **BASE_ENV)
    wait_until(lambda: state_lines(worker.log), timeout=60, what="the worker to say Redis refuses writes")
    time.sleep(3)  # several retries
    assert worker.process.poll() is None, worker.log[-3000:]
    assert Worker.count(connection=conn) == 0
    assert "Traceback" not in worker.log, worker.log[-3000:]
    allow(conn, how)
    wait_until(lambda: Worker.count(connection=conn) == 1, timeout=30, what="the worker to register")
    result = poll_until_done(lambda: requests.get(f"{url}/jobs/{job['job_id']}", timeout=10))
    assert result["status"] == "finished" and result["pid"] == worker.process.pid
    lines = state_lines(worker.log)
    assert len(lines) == 2 and "serves again" in lines[1], lines  # one line per state change


@pytest.mark.parametrize("how", ["full", "read-only"])
@pytest.mark.timeout(240)
def test_a_worker_keeps_results_it_cannot_record_and_records_them_once(fresh, web, start_worker, how):
    url, conn = web, fresh.client()
    worker = start_on(start_worker, fresh, "sleepy", WORKER_BATCH_SECONDS="10")
    tags = [f"{how}-{i}" for i in range(3)]  # distinct inputs
    batch = requests.post(
        f"{url}/sleepy/batch", json={"items": [{"seconds": 1.5, "tag": tag} for tag in tags]}, timeout=10
    ).json()
    ids = [item["job_id"] for item in batch["results"]]
    wait_until(lambda: conn.hget(f"rq:job:{ids[0]}", "status") == b"started", timeout=30, what="the batch to start")
    refuse(conn, how)  # while the batch runs: its results cannot be recorded
    wait_until(lambda: any("recording a batch" in line for line in state_lines(worker.log)), timeout=30,
               what="the worker to find it cannot record")  # fmt: skip
    time.sleep(4)  # past the lease (3 beats of 1 s): the worker keeps the jobs
    assert worker.process.poll() is None, worker.log[-3000:]
    for job_id in ids:  # polls answer; the jobs are still the worker's
        assert requests.get(f"{url}/jobs/{job_id}", timeout=10).json()["status"] == "started"
    allow(conn, how)
    results = [poll_until_done(lambda j=j: requests.get(f"{url}/jobs/{j}", timeout=10)) for j in ids]
    assert [r["status"] for r in results] == ["finished"] * 3, results
    assert [r["job_id"] for r in results] == ids and {r["pid"] for r in results} == {worker.process.pid}
    time.sleep(3)  # maintenance runs: nothing is taken for abandoned and run again
    for job_id in ids:
        assert conn.xlen(f"rq:results:{job_id}") == 1  # recorded exactly once
        assert conn.hget(f"rq:job:{job_id}", "status") == b"finished"
    assert conn.zcard("rq:failed:sleepy") == 0 and conn.llen("rq:queue:sleepy") == 0
    assert int(conn.hget(f"rq:worker:{Worker.all(connection=conn)[0].name}", "successful_job_count")) == 3
    assert "Traceback" not in worker.log, worker.log[-3000:]


# --- a full Redis that heals (issue 29) ------------------------------------------------------------


def webhooks_children(conn: redis.Redis) -> list[Worker]:
    return [worker for worker in Worker.all(connection=conn) if worker.queue_names() == ["webhooks"]]


@pytest.mark.timeout(240)
def test_every_child_process_rides_out_write_refusals(fresh, web, start_worker):
    """Plain rqworker's webhooks child (and its dispatcher) survive a full Redis: no restart, no
    traceback, and the service serves again once Redis takes writes."""
    url, conn = web, fresh.client()
    worker = start_on(start_worker, fresh)  # every queue, and the webhooks child
    wait_until(lambda: Worker.count(connection=conn) == 2, timeout=60, what="the worker and its webhooks child")
    (child,) = webhooks_children(conn)
    refuse(conn, "full")
    time.sleep(6)  # heartbeats, dequeues and the dispatcher's lease all refused, several times over
    allow(conn, "full")
    job = requests.post(f"{url}/factorize", json={"number": 9991}, timeout=10)
    assert job.status_code == 202, job.text
    done = poll_until_done(lambda: requests.get(f"{url}/jobs/{job.json()['job_id']}", timeout=10))
    assert done["status"] == "finished"
    wait_until(lambda: any(w.pid == child.pid for w in webhooks_children(conn)) and len(webhooks_children(conn)) == 1,
               timeout=30, what="the same webhooks child to heartbeat")  # fmt: skip
    assert worker.process.poll() is None
    assert "the webhooks worker exited" not in worker.log, worker.log[-3000:]
    assert "Traceback" not in worker.log, worker.log[-3000:]


FILL_UP_MAXMEMORY = "14mb"


@pytest.mark.timeout(420)
def test_a_fill_up_run_finishes_every_accepted_job_and_heals_by_itself(tmp_path: Path, start_worker):
    """The issue's run: batches of 100 into a 14 MB Redis while the workers are held back, until
    submits are refused; then every accepted job finishes (admission kept room for its result and
    the heartbeats), no process dies, and a batch that did not fit is admitted later."""
    own = OwnRedis(tmp_path, "--maxmemory", FILL_UP_MAXMEMORY, "--appendonly", "no")
    own.start()
    # One client fills the queue: its share (REDIS_CLIENT_SHARE, tested on its own) is all of it.
    env = {**BASE_ENV, "RESULT_TTL": "40", "JOB_TTL": "600", "REDIS_CLIENT_SHARE": "1"}
    try:
        conn = own.client()
        with web_server(own.url, **env) as url:
            worker = start_on(start_worker, own, **env)  # plain rqworker: every queue and the webhooks child
            wait_until(lambda: Worker.count(connection=conn) == 2, timeout=60, what="the worker and its webhooks child")
            (child,) = webhooks_children(conn)
            conn.set("rq:suspended", 1)  # the workers are busy elsewhere: the queue fills up
            accepted: list[str] = []
            refused = 0
            for start in range(10**9, 10**9 + 10**6, 100):
                response = requests.post(
                    f"{url}/factorize/batch", json={"items": [{"number": n} for n in range(start, start + 100)]},
                    timeout=30,
                )  # fmt: skip
                if response.status_code == 503:
                    assert response.json()["reason"] == "full", response.text
                    refused += 1
                    if refused == 3:
                        break
                    continue
                assert response.status_code in (200, 202), response.text
                accepted += [item["job_id"] for item in response.json()["results"]]
            peak = used_fraction(conn)
            conn.delete("rq:suspended")

            def finished() -> int:
                with conn.pipeline(transaction=False) as pipe:
                    for job_id in accepted:
                        pipe.hget(f"rq:job:{job_id}", "status")
                    return sum(status == b"finished" for status in pipe.execute())

            wait_until(lambda: finished() == len(accepted), timeout=120, interval=1, what="every accepted job")
            print(f"\n[full-redis] {len(accepted)} jobs accepted in batches of 100 into {FILL_UP_MAXMEMORY} "
                  f"(Redis at {peak:.0%} of maxmemory with them queued, {used_fraction(conn):.0%} once they "
                  f"ended), {finished()} finished")  # fmt: skip
            assert len(accepted) >= 400  # the run took 4 batches and could not finish them
            assert worker.process.poll() is None and "Traceback" not in worker.log, worker.log[-3000:]
            assert "refuses writes" not in worker.log, worker.log[-3000:]  # Redis itself never filled up
            assert [w.pid for w in webhooks_children(conn)] == [child.pid]
            # Their results fill Redis now: a batch that does not fit beside them is admitted again
            # later, nobody lifting a finger (as the results expire, RESULT_TTL; nothing is evicted:
            # the server's policy is noeviction).
            big = {"items": [{"number": n} for n in range(7000, 7450)]}
            refused_big = requests.post(f"{url}/factorize/batch", json=big, timeout=30)
            assert refused_big.status_code == 503 and refused_big.json()["reason"] == "full", refused_big.text
            wait_until(lambda: requests.post(f"{url}/factorize/batch", json=big, timeout=30).status_code in (200, 202),
                       timeout=120, interval=2, what="the batch to be admitted")  # fmt: skip
            assert conn.info("stats")["evicted_keys"] == 0
    finally:
        own.stop()
