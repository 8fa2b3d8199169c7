"""A stuck worker on a real engine (`make test-docker`): the default `worker` service, SIGSTOPped
inside its container, turns unhealthy, is killed by its watchdog and restarted by Compose, and the
new worker reports its predecessor (its registration dropped, counted in /queues). Also the idle
memory of a worker container, against the shipped limit.

Its own compose project (web, redis and one worker); the worker runs the service's image without
the models' own requirements (the types that need more are left out), which is quicker to build
and is the same `rqworker` command, watchdog and health check.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, wait_until
from tests.docker.compose_project import COMPOSE_BIN, ComposeProject, health, offline_model_builds

pytestmark = pytest.mark.docker

WORKER_FROM_APP_IMAGE = """
services:
  worker:
    image: ${COMPOSE_PROJECT_NAME}-app
    build:
      args:
        MODELS: ""
"""

# The model worker's pid in its container: the `rqworker` whose parent is the init (PID 1); its
# webhooks child and its watchdog are its own children.
MODEL_WORKER_PID = """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\\0")
    with open(f"/proc/{pid}/stat") as f:
        parent = int(f.read().rpartition(")")[2].split()[1])
    if b"rqworker" in argv and parent == 1:
        print(pid)
"""


class WatchdogProject(ComposeProject):
    def __init__(self, name: str, port: int, offline_models: Path, override: Path):
        super().__init__(name, port, offline_models)
        self.override = override

    def result(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        files = ["-f", "docker-compose.yml", "-f", "tests/docker/compose.offline.yml", "-f", str(self.offline_models)]
        files += ["-f", str(self.override)]
        return subprocess.run(
            [COMPOSE_BIN, "-p", self.name, *files, *args], cwd=Path(__file__).parents[2], env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Iterator[WatchdogProject]:
    folder = tmp_path_factory.mktemp("watchdog")
    override = folder / "worker-from-app.yml"
    override.write_text(WORKER_FROM_APP_IMAGE)
    compose = WatchdogProject(
        f"factorize-health-{os.getpid()}", free_port(), offline_model_builds(folder / "offline-models.yml"), override
    )
    try:
        started = time.monotonic()
        compose("build", "web")
        print(f"\n[docker] watchdog project: build {time.monotonic() - started:.0f} s")
        compose.up("redis", "web", "worker")
        yield compose
    finally:
        compose("down", "-v", "--remove-orphans", check=False)
        subprocess.run(["docker", "image", "rm", compose.image("app")], capture_output=True)


def restarts(container: str) -> int:
    found = subprocess.run(["docker", "inspect", "--format", "{{.RestartCount}}", container], capture_output=True,
                           text=True)  # fmt: skip
    return int(found.stdout.strip() or 0)


def test_an_idle_worker_fits_its_memory_limit(project):
    (worker,) = project("ps", "-q", "worker").split()
    stats = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", worker],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    print(f"[docker] idle worker container memory (usage / limit): {stats}")
    used, _, limit = stats.partition(" / ")
    assert used.endswith("MiB") and float(used.removesuffix("MiB")) < 0.8 * 512, stats
    assert limit.strip() == "512MiB", stats


def test_a_stopped_worker_is_killed_by_its_watchdog_and_restarted(project):
    (worker,) = project("ps", "-q", "worker").split()
    assert health(worker) == "healthy"
    before = restarts(worker)
    pid = project("exec", "-T", "worker", "python", "-c", MODEL_WORKER_PID).split()
    assert len(pid) == 1, pid
    project("exec", "-T", "worker", "python", "-c", f"import os, signal; os.kill({pid[0]}, signal.SIGSTOP)")
    stopped = time.monotonic()
    wait_until(lambda: health(worker) == "unhealthy" or restarts(worker) > before, timeout=120, interval=1,
               what="the stopped worker to be judged unhealthy")  # fmt: skip
    unhealthy_after = time.monotonic() - stopped
    wait_until(lambda: restarts(worker) > before, timeout=120, interval=1, what="the container to restart")
    restarted_after = time.monotonic() - stopped
    wait_until(lambda: health(worker) == "healthy", timeout=180, interval=1, what="the new worker to be healthy")
    healthy_after = time.monotonic() - stopped
    print(f"[docker] SIGSTOPped worker: unhealthy after {unhealthy_after:.0f} s, its container restarted after "
          f"{restarted_after:.0f} s, healthy again after {healthy_after:.0f} s")  # fmt: skip
    logs = project("logs", "--no-log-prefix", "worker")
    assert "the worker's loop has not gone round for" in logs
    assert "the last worker on this host died without unregistering (killed: out of memory?)" in logs
    queues = requests.get(project.url + "/queues", timeout=10).json()
    assert all(queue["workers_lost"] >= 1 and queue["workers"] == 1 for queue in queues if queue["workers"]), queues
    job = requests.post(project.url + "/factorize", json={"number": 1234567}, timeout=10).json()
    done = wait_until(lambda: (b := requests.get(f"{project.url}/jobs/{job['job_id']}", timeout=10).json())["done"]
                      and b, timeout=60, what="a job on the new worker")  # fmt: skip
    assert done["status"] == "finished"
