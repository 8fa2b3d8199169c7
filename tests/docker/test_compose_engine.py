"""The Docker files on a real engine (`make test-docker`): build, run, scale, route, persist.

The tests of this module share one compose project and run in file order; each leaves the
project running with the web server up. Images come from PYTHON_IMAGE / REDIS_IMAGE (the
official ones, or the stand-ins of scripts/docker-offline-images.sh).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, free_port, poll_until_done, wait_until

pytestmark = pytest.mark.docker

COMPOSE_BIN = str(Path(sys.executable).parent / "docker-compose")
ADMIN = ("admin", "not-a-real-secret-1")
SEED = {
    "number": 408216,
    "factorization": [[2, 3], [3, 1], [73, 1], [233, 1]],
    "factorization_str": "2^3 3^1 73^1 233^1",
}


class ComposeProject:
    def __init__(self, name: str, port: int):
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "COMPOSE_BAKE": "false",
            "WEB_PORT": str(port),
            "DJANGO_SUPERUSER_USERNAME": ADMIN[0],
            "DJANGO_SUPERUSER_PASSWORD": ADMIN[1],
        }
        self.env.pop("SECRET_KEY", None)  # the fresh-clone case: development defaults

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> str:
        files = ["-f", "docker-compose.yml", "-f", "tests/docker/compose.offline.yml"]
        result = subprocess.run(
            [COMPOSE_BIN, "-p", self.name, *files, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            pytest.fail(f"docker compose {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def up(self, *args: str) -> float:
        started = time.monotonic()
        self("up", "-d", "--wait", *args)
        return time.monotonic() - started

    def post(self, path: str, body: dict) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=10)

    def wait_done(self, path: str, body: dict, timeout: float = 60) -> dict:
        return poll_until_done(lambda: self.post(path, body), timeout=timeout, what=f"{path} {body} to finish")

    def workers(self) -> dict[str, int]:
        return {queue["name"]: queue["workers"] for queue in requests.get(self.url + "/queues", timeout=10).json()}

    def redis_cli(self, *args: str) -> str:
        return self("exec", "-T", "redis", "redis-cli", "--raw", *args)


@pytest.fixture(scope="module")
def compose() -> Iterator[ComposeProject]:
    project = ComposeProject(f"factorize-test-{os.getpid()}", free_port())
    try:
        started = time.monotonic()
        project("build")
        print(f"\n[docker] compose build: {time.monotonic() - started:.1f} s")
        print(f"[docker] compose up --wait: {project.up('--scale', 'worker=0'):.1f} s")
        yield project
    finally:
        project("--profile", "distributed", "down", "-v", "--remove-orphans", check=False)


def test_seed_async_example_through_port_8123(compose):
    first = compose.post("/factorize", {"number": 408216})
    assert first.status_code == 202
    job_id = first.json()["job_id"]
    assert first.json() == {
        "done": False,
        **{**SEED, "factorization": None, "factorization_str": None},
        "load": 1,
        "job_id": job_id,
        "status": "queued",
        "error": None,
    }
    compose.up("--scale", "worker=1")
    done = compose.wait_done("/factorize", {"number": 408216})
    assert done == {"done": True, **SEED, "load": 0, "job_id": job_id, "status": "finished", "error": None}


def test_seed_polling_loop_converges(compose):
    numbers = [random.randint(2, 2**20) for _ in range(20)]
    for _round in range(30):
        statuses = [compose.post("/factorize", {"number": n}).json() for n in numbers]
        if all(status["done"] for status in statuses):
            break
        time.sleep(1)
    else:
        pytest.fail("the seed's polling loop did not converge in 30 rounds")


def test_scaled_workers_share_a_burst_of_jobs(compose):
    compose.up("--scale", "worker=3")
    wait_until(lambda: compose.workers() == {"factorization": 3, "primes": 3}, timeout=60, what="3 workers")
    ids = [compose.post("/primes", {"n": 1000 + i}).json()["job_id"] for i in range(30)]
    for i in range(30):
        compose.wait_done("/primes", {"n": 1000 + i})
    names = {compose.redis_cli("hget", f"rq:job:{job_id}", "worker_name").strip() for job_id in ids}
    assert len(names) >= 2, f"one worker took the whole burst: {names}"


def test_distributed_profile_routes_each_type_to_its_own_workers(compose):
    compose.up("--scale", "worker=0")
    wait_until(lambda: compose.workers() == {"factorization": 0, "primes": 0}, timeout=60, what="workers to stop")
    compose("--profile", "distributed", "up", "-d", "--wait", "worker-primes")
    assert compose.post("/factorize", {"number": 1000003 * 1009}).json()["status"] == "queued"
    assert compose.wait_done("/primes", {"n": 10**7})["count"] == 664579
    time.sleep(1)
    assert compose.post("/factorize", {"number": 1000003 * 1009}).json()["status"] == "queued"
    compose("--profile", "distributed", "up", "-d", "--wait", "worker-factorization")
    assert compose.wait_done("/factorize", {"number": 1000003 * 1009})["factorization_str"] == "1009^1 1000003^1"
    compose("--profile", "distributed", "rm", "-sf", "worker-primes", "worker-factorization")


def test_containers_run_as_a_non_root_user(compose):
    assert compose("exec", "-T", "web", "id", "-u").strip() == "10001"
    compose.up("--scale", "worker=1")
    assert compose("exec", "-T", "worker", "id", "-u").strip() == "10001"


def test_admin_css_is_served_with_debug_off_and_the_dashboard_needs_a_login(compose):
    login_page = requests.get(compose.url + "/admin/login/", timeout=10)
    assert login_page.status_code == 200
    css = re.findall(r'href="(/static/admin/css/[^"]+\.css)"', login_page.text)
    assert css, "the login page links no stylesheet"
    for href in css:
        response = requests.get(compose.url + href, timeout=10)
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/css")
    anonymous = requests.get(compose.url + "/django-rq/", allow_redirects=False, timeout=10)
    assert anonymous.status_code == 302
    assert anonymous.headers["Location"].startswith("/admin/login/")

    session = requests.Session()
    session.get(compose.url + "/admin/login/", timeout=10)
    session.post(
        compose.url + "/admin/login/?next=/django-rq/",
        data={"username": ADMIN[0], "password": ADMIN[1], "csrfmiddlewaretoken": session.cookies["csrftoken"]},
        headers={"Referer": compose.url + "/admin/login/"},
        timeout=10,
    )
    dashboard = session.get(compose.url + "/django-rq/", timeout=10)
    assert dashboard.status_code == 200
    assert "factorization" in dashboard.text and "primes" in dashboard.text
    # The admin index links the dashboard.
    assert 'href="/admin/django_rq/dashboard/"' in session.get(compose.url + "/admin/", timeout=10).text


def test_a_queued_job_survives_down_and_up(compose):
    compose.up("--scale", "worker=0")
    wait_until(lambda: compose.workers()["factorization"] == 0, timeout=60, what="workers to stop")
    job_id = compose.post("/factorize", {"number": 2**61 - 3}).json()["job_id"]
    compose("--profile", "distributed", "down")  # keeps the volumes
    print(f"[docker] compose up after down: {compose.up('--scale', 'worker=0'):.1f} s")
    again = requests.get(f"{compose.url}/jobs/{job_id}", timeout=10)
    assert again.status_code == 202 and again.json()["status"] == "queued"
    compose.up("--scale", "worker=1")
    assert compose.wait_done("/factorize", {"number": 2**61 - 3})["status"] == "finished"


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
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
