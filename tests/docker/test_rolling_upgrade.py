"""A web upgrade without an outage, on a real engine (`make test-docker`): two web replicas behind
the proxy (deploy/compose/proxy.yml), replaced one at a time by scripts/rolling-upgrade.sh
while clients poll at 50 requests a second, hold a `Prefer: wait=60` poll and an event stream.

Its own compose project (the engine may be shared), web, Redis and the proxy only: no worker, so
the job polled stays queued and every answer is a 202. The figure is printed
(`[docker] rolling upgrade: ...`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port, wait_until
from tests.test_event_stream import read_events

pytestmark = pytest.mark.docker

COMPOSE_BIN = str(Path(sys.executable).parent / "docker-compose")
FILES = ("docker-compose.yml", "deploy/compose/proxy.yml", "tests/docker/compose.offline.yml")
RATE = 50  # requests a second, as in the report of issue 29


class Project:
    def __init__(self) -> None:
        self.name = f"factorize-upgrade-{os.getpid()}"
        port, subnet = free_port(), 100 + os.getpid() % 100  # a network of its own beside other projects
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "COMPOSE_BAKE": "false",
            "PROXY_BIND": "127.0.0.1",
            "PROXY_PORT": str(port),
            "PROXY_SUBNET": f"172.31.{subnet}.0/24",
            "PROXY_ADDRESS": f"172.31.{subnet}.10",
        }
        self.env.pop("SECRET_KEY", None)
        self.options = ["-p", self.name, *(arg for file in FILES for arg in ("-f", file))]

    def __call__(self, *args: str, timeout: float = 900) -> str:
        done = subprocess.run([COMPOSE_BIN, *self.options, *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"docker compose {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def web_containers(self) -> set[str]:
        return set(self("ps", "-q", "web").split())


def image_of(container: str) -> str:
    return subprocess.run(["docker", "inspect", "--format", "{{.Image}}", container], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip


@pytest.fixture(scope="module")
def project() -> Iterator[Project]:
    project = Project()
    try:
        project("build", "web")
        project("up", "-d", "--wait", "web", "proxy")
        wait_until(lambda: answers(project.url), timeout=60, what="the proxy to reach a replica")
        yield project
    finally:
        subprocess.run([COMPOSE_BIN, *project.options, "down", "-v", "--remove-orphans"], cwd=ROOT, env=project.env,
                       capture_output=True, timeout=300)  # fmt: skip
        subprocess.run(["docker", "image", "rm", f"{project.name}-app"], capture_output=True)


def answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=2, headers={"Host": "localhost"}).status_code == 200
    except requests.RequestException:
        return False


class Load:
    """RATE requests a second (a poll by id and a submit-or-poll of the same input, in turn), each
    on its own thread from a pool of sessions, counted by outcome."""

    def __init__(self, url: str, job_id: str, number: int) -> None:
        self.url, self.job_id, self.number = url, job_id, number
        self.outcomes: Counter[str] = Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sessions = [requests.Session() for _ in range(16)]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._inflight: list[threading.Thread] = []

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for thread in self._inflight:
            thread.join(90)

    def _run(self) -> None:
        started, sent = time.monotonic(), 0
        while not self._stop.is_set():
            session = self._sessions[sent % len(self._sessions)]
            thread = threading.Thread(target=self._one, args=(session, sent % 2 == 0), daemon=True)
            thread.start()
            self._inflight.append(thread)
            sent += 1
            time.sleep(max(0.0, started + sent / RATE - time.monotonic()))

    def _one(self, session: requests.Session, by_id: bool) -> None:
        try:
            if by_id:
                response = session.get(f"{self.url}/jobs/{self.job_id}", timeout=30)
            else:
                response = session.post(f"{self.url}/factorize", json={"number": self.number}, timeout=30)
            outcome = str(response.status_code)
            failed = response.status_code != 202 or response.json()["job_id"] != self.job_id
            detail = f"{outcome} {response.text[:200]}"
        except (requests.RequestException, ValueError) as exc:
            outcome, failed, detail = type(exc).__name__, True, repr(exc)
        with self._lock:
            self.outcomes[outcome] += 1
            if failed:
                self.failures.append(detail)


def test_a_rolling_upgrade_under_50_polls_a_second_loses_no_request(project):
    number = 1000000016000000063  # two primes near 10^9: no worker runs here, it stays queued
    job_id = requests.post(f"{project.url}/factorize", json={"number": number}, timeout=10).json()["job_id"]
    old = project.web_containers()
    assert len(old) == 2, "deploy/compose/proxy.yml runs two replicas"
    held: dict[str, object] = {}

    def hold_a_poll():
        try:
            held["poll"] = requests.get(f"{project.url}/jobs/{job_id}", headers={"Prefer": "wait=60"}, timeout=90)
        except requests.RequestException as exc:
            held["poll"] = exc
        held["poll_answered"] = time.monotonic()

    def hold_a_stream():
        try:
            response = requests.get(f"{project.url}/jobs/{job_id}", headers={"Accept": "text/event-stream"},
                                    stream=True, timeout=(10, 90))  # fmt: skip
            held["stream"] = list(read_events(response))
        except requests.RequestException as exc:
            held["stream"] = exc
        held["stream_ended"] = time.monotonic()

    # A new image: the same build with one more label (an upgrade's new version, without a rebuild).
    image = f"{project.name}-app"
    subprocess.run(["docker", "build", "-t", image, "--label", "factorize.test.version=2", "-"],
                   input=f"FROM {image}\n", text=True, capture_output=True, check=True)  # fmt: skip
    new_image = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True,
                               text=True, check=True).stdout.strip()  # fmt: skip

    holders = [threading.Thread(target=hold_a_poll), threading.Thread(target=hold_a_stream)]
    with Load(project.url, job_id, number) as load:
        time.sleep(2)  # load before the upgrade starts, too
        for holder in holders:
            holder.start()
        started = time.monotonic()
        upgrade = subprocess.run(["scripts/rolling-upgrade.sh", *project.options], cwd=ROOT, env=project.env,
                                 capture_output=True, text=True, timeout=600)  # fmt: skip
        upgraded = time.monotonic()
        time.sleep(2)  # and after it
    for holder in holders:
        holder.join(90)
    total = sum(load.outcomes.values())
    print(f"\n[docker] rolling upgrade of 2 web replicas: {upgraded - started:.1f} s; {total} requests at "
          f"{RATE}/s during it, {len(load.failures)} failed; outcomes {dict(load.outcomes)}")  # fmt: skip
    print(upgrade.stderr)

    assert upgrade.returncode == 0, upgrade.stderr
    new = project.web_containers()
    assert len(new) == 2 and not new & old, "both replicas were replaced"
    assert {image_of(container) for container in new} == {new_image}
    assert total >= RATE * (upgraded - started), "the load ran throughout"
    assert load.failures == [], f"{len(load.failures)} of {total} failed: {load.failures[:5]}"

    poll = held["poll"]
    assert isinstance(poll, requests.Response), f"the held poll: {poll!r}"
    assert poll.status_code == 202 and poll.json()["status"] == "queued"
    assert poll.headers["Retry-After"] == "1", "answered by its draining replica: poll again in a second"
    assert held["poll_answered"] < upgraded, "answered when its replica stopped, not after its 60 s"
    stream = held["stream"]
    assert isinstance(stream, list), f"the stream: {stream!r}"
    assert stream[-1] == {"retry": "1000"}, "ended by its draining replica: reconnect in a second"
    assert held["stream_ended"] < upgraded
