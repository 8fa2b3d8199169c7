"""Redis outages and the bounds they must keep (issue 23): queued jobs outlive an outage longer
than JOB_TTL (Redis expires them as it loads; the worker's sweep enqueues them again, and a job
nobody polled stays gone), and /readyz answers within its bound when Redis hangs or its name does
not resolve. The test's own `redis-server` (tests/test_redis_outage.py's OwnRedis).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import poll_until_done, wait_until, web_server
from tests.test_full_redis import BASE_ENV, start_on
from tests.test_redis_outage import OwnRedis


@pytest.mark.timeout(240)
def test_queued_jobs_outlive_a_redis_outage_longer_than_job_ttl(tmp_path: Path, start_worker):
    own = OwnRedis(tmp_path)  # append-only: what Redis had comes back on restart
    own.start()
    env = {**BASE_ENV, "JOB_TTL": "3"}
    try:
        # A worker for another queue: it looks after the queue (its maintenance) but runs none of these.
        start_on(start_worker, own, "primes", **env)
        with web_server(own.url, **env) as url:
            abandoned = requests.post(f"{url}/factorize", json={"number": 1111}, timeout=10).json()["job_id"]
            time.sleep(5)  # nobody polls it for more than JOB_TTL while the queue is looked after: gone
            assert requests.get(f"{url}/jobs/{abandoned}", timeout=10).status_code == 404
            kept = [requests.post(f"{url}/factorize", json={"number": n}, timeout=10).json() for n in (2222, 3333)]
            assert [job["status"] for job in kept] == ["queued", "queued"]

            own.shutdown()
            time.sleep(8)  # longer than JOB_TTL (and the outage gap): Redis expires them as it loads
            own.start()
            conn = own.client()
            wait_until(lambda: all(conn.exists(f"rq:job:{job['job_id']}") for job in kept), timeout=30,
                       what="the worker's sweep to enqueue the lost jobs again")  # fmt: skip
            for job in kept:
                poll = requests.get(f"{url}/jobs/{job['job_id']}", timeout=10)
                assert poll.status_code == 202 and poll.json()["status"] == "queued", poll.text
            assert requests.get(f"{url}/jobs/{abandoned}", timeout=10).status_code == 404  # not revived
            start_on(start_worker, own, "factorization", **env)
            for job in kept:
                done = poll_until_done(lambda j=job: requests.get(f"{url}/jobs/{j['job_id']}", timeout=10))
                assert done["status"] == "finished", done
    finally:
        own.stop()


@pytest.mark.timeout(120)
def test_readyz_answers_within_its_bound_when_redis_hangs_or_its_name_does_not_resolve(tmp_path: Path):
    own = OwnRedis(tmp_path)
    own.start()
    try:
        with web_server(own.url, REDIS_SOCKET_TIMEOUT="20") as url:
            assert requests.get(f"{url}/readyz", timeout=10).json()["status"] == "ok"
            own.process.send_signal(signal.SIGSTOP)
            for _ in range(3):  # later probes wait on the hung one rather than piling up threads
                started = time.monotonic()
                ready = requests.get(f"{url}/readyz", timeout=10)
                assert time.monotonic() - started < 2.5
                assert ready.status_code == 503 and ready.json()["status"] == "unavailable", ready.text
            own.process.send_signal(signal.SIGCONT)
            wait_until(lambda: requests.get(f"{url}/readyz", timeout=10).status_code == 200, timeout=30)
    finally:
        own.stop()
    with web_server("redis://no-such-redis-host.invalid:6379/0", REDIS_SOCKET_TIMEOUT="20") as url:
        started = time.monotonic()
        ready = requests.get(f"{url}/readyz", timeout=10)
        assert time.monotonic() - started < 2.5
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable", ready.text
