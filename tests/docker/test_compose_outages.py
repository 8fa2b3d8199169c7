"""The compose project through outages (`make test-docker`): a worker that stops heartbeating turns
unhealthy, a stopped Redis answers 503 within its timeout and the service comes back, a capped
Redis refuses with 503 instead of growing; and the single container in sync mode needs no Redis.

After test_compose_engine.py, on the same compose project (tests/docker/conftest.py): the warnings
these tests cause on purpose come after its every-line-is-JSON test.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import requests

from tests.conftest import ROOT, free_port, wait_until
from tests.docker.compose_project import (
    SEED,
    container_ids,
    digits_batch,
    health,
)

pytestmark = pytest.mark.docker


# Signals the worker process inside its container (PID 1 is the init, which cannot pass on SIGSTOP).
SIGNAL_WORKER = """
import os, signal, sys
for pid in filter(str.isdigit, os.listdir("/proc")):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\\0")
    if b"rqworker" in argv and int(pid) != os.getpid():
        os.kill(int(pid), getattr(signal, sys.argv[1]))
"""


def test_a_worker_that_stops_heartbeating_turns_unhealthy(compose):
    """Every rqworker process of the container stopped (its watchdog too, so that nothing restarts
    it): the check fails. tests/docker/test_worker_watchdog_engine.py stops the worker alone."""
    compose.up("--scale", "worker=1")  # --wait: healthy means a worker of this container heartbeats
    (worker,) = container_ids(compose, "worker")
    assert health(worker) == "healthy"
    assert "healthy: worker" in compose("exec", "-T", "worker", "python", "manage.py", "workerhealth")
    compose("exec", "-T", "worker", "python", "-c", SIGNAL_WORKER, "SIGSTOP")
    started = time.monotonic()
    try:
        wait_until(lambda: health(worker) == "unhealthy", timeout=180, interval=2, what="the worker to turn unhealthy")
        print(f"[docker] stopped worker unhealthy after {time.monotonic() - started:.0f} s")
    finally:
        # Its watchdog (stopped with it here) may find the loop stalled once continued and kill the
        # worker: the container restarts, which may cut this exec short.
        compose("exec", "-T", "worker", "python", "-c", SIGNAL_WORKER, "SIGCONT", check=False)
    wait_until(lambda: health(worker) == "healthy", timeout=180, interval=2, what="the worker to recover")


def test_a_stopped_redis_answers_503_within_its_timeout_and_the_service_comes_back(compose):
    """With the Redis container stopped, its name stops resolving (Docker's DNS answers slowly):
    the lookup is bounded by REDIS_SOCKET_TIMEOUT (5 s) like the socket, so a poll is a JSON 503
    at once, not after 30 s; the workers stay up and serve again when Redis is back. (After the
    test that reads every log line: the 503s are logged.)"""
    compose.up("--scale", "worker=1")
    compose("stop", "redis")
    try:
        times = []
        for number in (4757, 4759, 4761):
            started = time.monotonic()
            answer = requests.post(compose.url + "/factorize", json={"number": number}, timeout=30)
            times.append(time.monotonic() - started)
            assert answer.status_code == 503 and answer.headers["Content-Type"].startswith("application/json")
        print(f"[docker] 503 with Redis stopped in {', '.join(f'{t:.2f}' for t in times)} s")
        assert max(times) < 5 + 2, times
    finally:
        compose("start", "redis")

    def finished() -> dict | None:  # a 503 while Redis loads its data again is part of coming back
        answer = compose.post("/factorize", {"number": 4757})
        return answer.json() if answer.status_code == 200 and answer.json()["done"] else None

    assert wait_until(finished, timeout=120, interval=0.5, what="the job to run once Redis is back")["status"] == (
        "finished"
    )


def test_redis_refuses_with_503_at_its_cap_instead_of_growing(compose):
    compose.env["REDIS_MAXMEMORY"] = "3mb"
    try:
        compose.up("--scale", "worker=0")  # Redis is recreated with the small cap; its data stays
        assert compose.redis_cli("config", "get", "maxmemory").split()[-1] == str(3 * 2**20)
        refused = None
        for batch in range(400):
            numbers = [10**12 + batch * 1000 + i for i in range(200)]
            response = requests.post(compose.url + "/factorize/batch", json={"numbers": numbers}, timeout=30)
            if response.status_code == 503:
                refused = response
                break
            assert response.status_code in (200, 202), response.text
        assert refused is not None, "Redis never filled up"
        assert refused.headers["Content-Type"].startswith("application/json")
        print(f"[docker] full Redis: {refused.status_code} {refused.text[:300]}")
        assert refused.json()  # a JSON body saying why, not a traceback
        for more in range(5):  # ...and it stays refused: Redis does not grow past its cap
            numbers = [2 * 10**12 + more * 1000 + i for i in range(200)]
            again = requests.post(compose.url + "/factorize/batch", json={"numbers": numbers}, timeout=30)
            assert again.status_code == 503 and again.headers["Content-Type"].startswith("application/json")
        memory = dict(line.split(":", 1) for line in compose.redis_cli("info", "memory").splitlines() if ":" in line)
        used, cap = int(memory["used_memory"]), int(memory["maxmemory"])
        print(f"[docker] Redis refused at used_memory {used} of maxmemory {cap} after {batch + 1} batches")
        assert used < cap + 2**20, "noeviction holds Redis at its cap (give or take the last batch)"
    finally:
        compose.env.pop("REDIS_MAXMEMORY")
        compose("exec", "-T", "redis", "redis-cli", "flushall", check=False)  # this test project's own Redis
        compose.up("--scale", "worker=1")


def test_single_container_sync_mode_needs_no_redis():
    tag = f"factorize-sync-test-{os.getpid()}"
    port = free_port()
    build = subprocess.run(
        ["docker", "build", "-q", "-t", tag, "--network", "host", "--build-arg",
         f"PYTHON_IMAGE={os.environ.get('PYTHON_IMAGE', 'python:3.11-slim')}", "."],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    container = subprocess.run(
        ["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8080", "-e", "EXECUTION_MODE=sync", tag],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:

        def answers():
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok
            except requests.RequestException:  # docker-proxy accepts before gunicorn listens
                return False

        wait_until(answers, timeout=60, what="the sync container")
        response = requests.post(f"http://127.0.0.1:{port}/factorize", json={"number": 408216}, timeout=10)
        assert response.status_code == 200
        assert response.json() == {"done": True, **SEED}
        # The default image has every model: the synchronous mode answers digits too.
        batch, labels = digits_batch(1, start=120)
        digit = requests.post(f"http://127.0.0.1:{port}/digits", json=batch["items"][0], timeout=30)
        assert digit.status_code == 200 and digit.json()["digit"] == labels[0], digit.text
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
