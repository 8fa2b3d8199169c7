"""Health checks that judge the process they stand for, and a stuck worker that is restarted.

Real `manage.py rqworker` processes: plain `rqworker` (every queue, with its webhooks child and
its watchdog) and named ones. A SIGSTOP stands for a stuck model (every thread of the process
stops, as in a deadlock or a C call that holds the interpreter); a SIGKILL for the kernel's
out-of-memory killer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from rq.worker import Worker

from tests.conftest import PYTHON, ROOT, WorkerProcess, service_env, submit, wait_until

WEBHOOKS = "webhooks"


@pytest.fixture
def rqworker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """`manage.py rqworker <args>` (queues and options), not waited on."""
    started: list[WorkerProcess] = []

    def start(*args: str, **env: str) -> WorkerProcess:
        log_path = tmp_path / f"rqworker-{len(started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [PYTHON, "manage.py", "rqworker", *args], cwd=ROOT, env=service_env(**env), stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        started.append(WorkerProcess(process, log_path))
        return started[-1]

    yield start
    for worker in started:
        worker.stop()


def workers_of(conn: redis.Redis, pid: int) -> list[Worker]:
    return [worker for worker in Worker.all(connection=conn) if worker.pid == pid]


def registered(conn: redis.Redis, worker: WorkerProcess, *, with_webhooks_child: bool = False) -> None:
    def ready() -> bool:
        assert worker.process.poll() is None, worker.log[-3000:]
        queues = [w.queue_names() for w in Worker.all(connection=conn)]
        mine = workers_of(conn, worker.process.pid)
        return bool(mine) and (not with_webhooks_child or [WEBHOOKS] in queues)

    wait_until(ready, timeout=90, what="the worker (and its webhooks child) to register")


def workerhealth(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "manage.py", "workerhealth", *args], cwd=ROOT, env=service_env(), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rpartition(")")[2].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError):
                continue
    return found


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.timeout(180)
def test_workerhealth_judges_the_model_worker_not_its_webhooks_child(redis_conn, rqworker):
    """A stopped model worker is unhealthy while its webhooks child (same host) keeps beating."""
    worker = rqworker("--watchdog", "0")  # no watchdog: the check alone is judged here
    registered(redis_conn, worker, with_webhooks_child=True)
    healthy = workerhealth()
    assert healthy.returncode == 0, healthy.stderr
    model_name = workers_of(redis_conn, worker.process.pid)[0].name
    assert model_name in healthy.stdout
    os.kill(worker.process.pid, signal.SIGSTOP)
    try:
        unhealthy = wait_until(lambda: (r := workerhealth()).returncode == 1 and r, timeout=30, what="unhealthy")
        assert f"worker {model_name} last heartbeat" in unhealthy.stderr, unhealthy.stderr
        (child,) = [w for w in Worker.all(connection=redis_conn) if w.queue_names() == [WEBHOOKS]]
        beat = child.last_heartbeat
        wait_until(  # the child beats every second (tests.settings) while its parent is stopped
            lambda: (child.refresh(), child.last_heartbeat)[1] > beat, timeout=10, what="the child to beat"
        )
        assert time.time() - child.last_heartbeat.timestamp() < 3, "the webhooks child should still beat"
        assert workerhealth("--pid", str(child.pid)).returncode == 0  # judged alone, the child is healthy
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)
    wait_until(lambda: workerhealth().returncode == 0, timeout=30, what="healthy again")


@pytest.mark.timeout(180)
def test_a_stopped_worker_is_killed_by_its_watchdog_within_its_limit(redis_conn, rqworker):
    """Plain rqworker: the watchdog SIGKILLs the stopped worker once its loop has not gone round
    for --watchdog seconds; the webhooks child and the watchdog follow it out."""
    limit = 4.0
    worker = rqworker("--watchdog", str(limit))
    registered(redis_conn, worker, with_webhooks_child=True)
    helpers = children(worker.process.pid)
    assert len(helpers) == 2, helpers  # the watchdog and the webhooks child
    os.kill(worker.process.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    wait_until(lambda: worker.process.poll() is not None, timeout=60, interval=0.05, what="the watchdog's kill")
    took = time.monotonic() - stopped
    print(f"[health] a SIGSTOPped worker was killed by its watchdog after {took:.1f} s (limit {limit:g} s)")
    assert worker.process.returncode == -signal.SIGKILL
    assert limit <= took < limit + 5
    wait_until(lambda: all(gone(pid) for pid in helpers), timeout=30, what="the webhooks child and watchdog to exit")
    assert "the worker's loop has not gone round for" in worker.log


@pytest.mark.timeout(180)
def test_a_long_job_and_a_suspension_are_not_taken_for_a_stall(redis_conn, rqworker, api):
    """The lease keeper stamps while a job runs longer than the limit; a suspended worker's wait
    stamps too."""
    worker = rqworker("sleepy", "--watchdog", "2.5")
    registered(redis_conn, worker)
    job_id = submit(api, "/sleepy", seconds=2.95, tag="watchdog").json()["job_id"]  # its timeout is 3 s
    wait_until(lambda: api.get(f"/jobs/{job_id}").json()["status"] == "finished", timeout=60, what="the long job")
    redis_conn.set("rq:suspended", 1)
    suspended = submit(api, "/sleepy", seconds=0, tag="suspended").json()["job_id"]
    time.sleep(5)  # suspended for longer than the limit
    assert api.get(f"/jobs/{suspended}").json()["status"] == "queued"
    redis_conn.delete("rq:suspended")
    wait_until(lambda: api.get(f"/jobs/{suspended}").json()["status"] == "finished", timeout=30, what="resumed")
    assert worker.process.poll() is None, worker.log[-3000:]
    assert "has not gone round" not in worker.log


@pytest.mark.timeout(180)
def test_the_next_worker_on_a_host_reports_and_drops_a_killed_predecessor(redis_conn, rqworker, api):
    """A worker SIGKILLed (as by the out-of-memory killer) leaves its registration; the next
    worker started on the host says so in one line, drops it before registering, and /queues
    counts it."""
    first = rqworker("factorization", "--watchdog", "0")
    registered(redis_conn, first)
    (dead,) = workers_of(redis_conn, first.process.pid)
    assert api.get("/queues").json()[0]["workers_lost"] == 0
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    assert redis_conn.exists(dead.key)  # nobody unregistered it
    second = rqworker("factorization", "--watchdog", "0")
    registered(redis_conn, second)
    lines = [line for line in second.log.splitlines() if "died without unregistering" in line]
    assert len(lines) == 1 and dead.name in lines[0] and "out of memory?" in lines[0], second.log[-3000:]
    assert not redis_conn.exists(dead.key)
    assert [w.name for w in Worker.all(connection=redis_conn)] == [workers_of(redis_conn, second.process.pid)[0].name]
    (stats,) = [queue for queue in api.get("/queues").json() if queue["name"] == "factorization"]
    assert stats["workers_lost"] == 1 and stats["workers"] == 1, stats
    # A worker that stopped cleanly is no loss.
    second.stop()
    third = rqworker("factorization", "--watchdog", "0")
    registered(redis_conn, third)
    assert "died without unregistering" not in third.log
