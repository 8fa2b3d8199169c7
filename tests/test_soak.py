"""Soak: 200 concurrent clients submit and poll for SOAK_SECONDS (default 60) against the
production server with two real workers. No answer may be a 5xx (nor a dropped connection), no
job may be lost (each one submitted finishes, with the right answer), and GET /queues adds up
at the end.

SOAK_CLIENTS (default 200) and SOAK_THINK (seconds between a client's requests, default 0.3,
randomized ±50 %) shape the load.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import requests
from rq.registry import FinishedJobRegistry

from tests.conftest import web_server

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "200"))
THINK = float(os.environ.get("SOAK_THINK", "0.3"))
DRAIN_SECONDS = 120  # after the load: every job still pending must finish within this
MAX_PENDING = 3  # jobs a client polls at once before it submits more
# Throttling is for hostile clients; the soak's 200 clients share one address on purpose.
NO_THROTTLE = {"THROTTLE_SUBMIT": "", "THROTTLE_POLL": ""}  # empty: no limit


@dataclass
class Job:
    path: str
    body: dict
    job_id: str
    answer: dict | None = None  # the done answer


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    jobs: dict[str, Job] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, method: str, path: str, response: requests.Response | None, error: Exception | None) -> None:
        with self.lock:
            if error is not None:
                self.statuses["error"] += 1
                self.errors.append(f"{method} {path}: {type(error).__name__}: {error}")
            else:
                self.statuses[response.status_code] += 1
                if response.status_code >= 500:
                    self.errors.append(f"{method} {path}: {response.status_code} {response.text[:200]}")


def new_input(rng: random.Random) -> tuple[str, dict]:
    if rng.random() < 0.8:
        return "/factorize", {"number": rng.randint(2, 10**12)}
    return "/primes", {"n": rng.randint(2, 10**5)}


class Client(threading.Thread):
    """One polling client: submits new inputs, polls its pending jobs (re-POST, GET /jobs/<id>,
    sometimes a `Prefer: wait=2` long poll) and now and then looks at /queues or an endpoint."""

    def __init__(self, number: int, url: str, tally: Tally, stop: threading.Event):
        super().__init__(name=f"soak-client-{number}", daemon=True)
        self.rng = random.Random(number)
        self.url, self.tally, self.stop = url, tally, stop
        self.pending: list[Job] = []

    def request(self, session: requests.Session, method: str, path: str, **kwargs) -> requests.Response | None:
        try:
            response = session.request(method, f"{self.url}{path}", timeout=30, **kwargs)
        except requests.RequestException as exc:
            self.tally.record(method, path, None, exc)
            return None
        self.tally.record(method, path, response, None)
        return response

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                self.step(session)
                self.stop.wait(THINK * self.rng.uniform(0.5, 1.5))

    def step(self, session: requests.Session) -> None:
        roll = self.rng.random()
        if roll < 0.05:
            self.request(session, "GET", "/queues")
        elif roll < 0.07:
            self.request(session, "GET", self.rng.choice(["/factorize", "/primes"]))
        elif len(self.pending) < MAX_PENDING and roll < 0.45:
            path, body = new_input(self.rng)
            self.absorb(Job(path, body, ""), self.request(session, "POST", path, json=body))
        elif self.pending:
            job = self.pending[0]
            self.pending.append(self.pending.pop(0))  # round robin: every pending job is polled often
            poll = self.rng.random()
            if poll < 0.45:
                response = self.request(session, "POST", job.path, json=job.body)
            elif poll < 0.9:
                response = self.request(session, "GET", f"/jobs/{job.job_id}")
            else:
                response = self.request(session, "GET", f"/jobs/{job.job_id}", headers={"Prefer": "wait=2"})
            self.absorb(job, response)

    def absorb(self, job: Job, response: requests.Response | None) -> None:
        if response is None or response.status_code not in (200, 202):
            return
        answer = response.json()
        if not job.job_id:  # a new submit
            job.job_id = answer["job_id"]
            with self.tally.lock:
                job = self.tally.jobs.setdefault(job.job_id, job)  # the same input may come twice
            if job not in self.pending:
                self.pending.append(job)
        if answer["done"]:
            job.answer = answer
            if job in self.pending:
                self.pending.remove(job)


def drain(url: str, jobs: list[Job]) -> dict[str, str]:
    """Poll every job not seen done until it is, within DRAIN_SECONDS; returns the lost ones."""
    deadline = time.monotonic() + DRAIN_SECONDS
    lost: dict[str, str] = {}
    lock = threading.Lock()

    def wait_for(job: Job) -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                response = session.get(f"{url}/jobs/{job.job_id}", timeout=30)
                if response.status_code == 404:
                    with lock:
                        lost[job.job_id] = "404: the job vanished"
                    return
                assert response.status_code in (200, 202), response.text
                if response.json()["done"]:
                    job.answer = response.json()
                    return
                time.sleep(0.5)
            with lock:
                lost[job.job_id] = f"still {response.json()['status']} after {DRAIN_SECONDS} s"

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(wait_for, jobs))
    return lost


def correct(job: Job) -> bool:
    answer = job.answer
    if job.path == "/factorize":
        product = math.prod(prime**exponent for prime, exponent in answer["factorization"])
        return product == job.body["number"]
    return answer["count"] is not None and answer["largest"] <= job.body["n"]


@pytest.mark.timeout(SOAK_SECONDS + 300)
def test_soak_200_clients(start_worker, redis_conn, capsys):
    for _ in range(2):
        start_worker("factorization", "primes")
    with web_server(ACCESS_LOG="0", **NO_THROTTLE) as url:
        tally, stop = Tally(), threading.Event()
        clients = [Client(number, url, tally, stop) for number in range(CLIENTS)]
        started = time.monotonic()
        for client in clients:
            client.start()
        time.sleep(SOAK_SECONDS)
        stop.set()
        for client in clients:
            client.join(60)
        load_seconds = time.monotonic() - started
        assert not any(client.is_alive() for client in clients), "a client hung"

        jobs = list(tally.jobs.values())
        open_jobs = [job for job in jobs if job.answer is None]
        drain_started = time.monotonic()
        lost = drain(url, open_jobs)
        drain_seconds = time.monotonic() - drain_started
        stats = {entry["name"]: entry for entry in requests.get(f"{url}/queues", timeout=30).json()}

    requests_sent = sum(tally.statuses.values())
    finished = [job for job in jobs if job.answer and job.answer["status"] == "finished"]
    failed = [job for job in jobs if job.answer and job.answer["status"] != "finished"]
    with capsys.disabled():
        print(
            f"\nsoak: {CLIENTS} clients for {load_seconds:.1f} s: {requests_sent} requests "
            f"({requests_sent / load_seconds:.0f}/s), by status {dict(sorted(tally.statuses.items(), key=str))}, "
            f"{len(tally.errors)} errors (5xx or connection); {len(jobs)} jobs submitted, {len(finished)} finished, "
            f"{len(failed)} failed, {len(lost)} lost; {len(open_jobs)} still pending when the load stopped, "
            f"drained in {drain_seconds:.1f} s"
        )
        print(f"  /queues at the end: {list(stats.values())}")

    assert not tally.errors, f"{len(tally.errors)} errors, first ones:\n" + "\n".join(tally.errors[:20])
    assert not lost, f"{len(lost)} jobs lost: {list(lost.items())[:20]}"
    assert jobs and not failed, [job.answer for job in failed[:10]]
    wrong = [job for job in finished if not correct(job)]
    assert not wrong, [(job.body, job.answer) for job in wrong[:10]]
    for name, path in [("factorization", "/factorize"), ("primes", "/primes")]:
        ours = {job.job_id for job in finished if job.path == path}
        entry = stats[name]
        assert entry["queued"] == 0 and entry["started"] == 0, entry
        assert entry["failed"] == 0 and entry["workers"] == 2, entry
        assert entry["finished"] >= len(ours), (entry, len(ours))  # only ours ran: equal, in practice
        registry = FinishedJobRegistry(name, connection=redis_conn)
        assert set(registry.get_job_ids()) >= ours
