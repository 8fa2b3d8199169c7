"""The Docker files on a real engine (`make test-docker`): build, run, scale, route, persist.

The tests of this module share one compose project and run in file order; each leaves the
project running with the web server up. Images come from PYTHON_IMAGE / REDIS_IMAGE (the
official ones, or the stand-ins of scripts/docker-offline-images.sh). The images' sizes are
printed (`[docker] image ...`).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import yaml
from django.utils.module_loading import import_string

from project.settings import DEFAULT_TASK_TYPES
from tests.conftest import ROOT, free_port, poll_until_done, wait_until

pytestmark = pytest.mark.docker

COMPOSE_BIN = str(Path(sys.executable).parent / "docker-compose")
ADMIN = ("admin", "not-a-real-secret-1")
# The task types the compose file deploys (the default ones), and those with requirements of their
# own, each with an image of its own (`<project>-worker-<type>`, deploy/compose/workers.yml).
SHIPPED = [import_string(path) for path in DEFAULT_TASK_TYPES]
QUEUES = tuple(task_type.name for task_type in SHIPPED)
MODELS = [task_type for task_type in SHIPPED if task_type.requirements]
IMAGES = ("app", "worker", *(f"worker-{task_type.name.lower().replace('_', '-')}" for task_type in MODELS))
SEED = {
    "number": 408216,
    "factorization": [[2, 3], [3, 1], [73, 1], [233, 1]],
    "factorization_str": "2^3 3^1 73^1 233^1",
}


class ComposeProject:
    def __init__(self, name: str, port: int, offline_models: Path):
        self.name = name
        self.offline_models = offline_models
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
        result = self.result(*args, timeout=timeout)
        if check and result.returncode != 0:
            pytest.fail(f"docker compose {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def result(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        files = ["-f", "docker-compose.yml", "-f", "tests/docker/compose.offline.yml", "-f", str(self.offline_models)]
        return subprocess.run(
            [COMPOSE_BIN, "-p", self.name, *files, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def image(self, name: str) -> str:
        return f"{self.name}-{name}"

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


def offline_model_builds(path: Path) -> Path:
    """compose.offline.yml's build settings for every service that builds a model's image (the ones
    `make deploy-files` writes, deploy/compose/workers.yml): an override names each service itself."""
    listed = subprocess.run(
        [COMPOSE_BIN, "--profile", "*", "config", "--format", "json"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "COMPOSE_PROJECT_NAME": "factorize"}, check=True,
    )  # fmt: skip
    offline = yaml.safe_load((ROOT / "tests" / "docker" / "compose.offline.yml").read_text())
    services = json.loads(listed.stdout)["services"]
    builds = {name: {"build": dict(offline["x-offline-build"])} for name, s in services.items() if "build" in s}
    path.write_text(yaml.safe_dump({"services": {k: v for k, v in builds.items() if k not in offline["services"]}}))
    return path


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> Iterator[ComposeProject]:
    offline_models = offline_model_builds(tmp_path_factory.mktemp("compose") / "offline-models.yml")
    project = ComposeProject(f"factorize-test-{os.getpid()}", free_port(), offline_models)
    try:
        started = time.monotonic()
        project("--profile", "distributed", "build")
        print(f"\n[docker] compose build ({', '.join(IMAGES)}): {time.monotonic() - started:.1f} s")
        print(f"[docker] compose up --wait: {project.up('--scale', 'worker=0'):.1f} s")
        yield project
    finally:
        project("--profile", "distributed", "down", "-v", "--remove-orphans", check=False)
        # This run's own images (not the base images; the build cache stays for the next run).
        images = [project.image(name) for name in IMAGES]
        subprocess.run(["docker", "image", "rm", *images], capture_output=True)


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
        "progress": None,
    }
    compose.up("--scale", "worker=1")
    done = compose.wait_done("/factorize", {"number": 408216})
    assert done == {
        "done": True,
        **SEED,
        "load": 0,
        "job_id": job_id,
        "status": "finished",
        "error": None,
        "progress": None,
    }


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
    wait_until(lambda: compose.workers() == dict.fromkeys(QUEUES, 3), timeout=60, what="3 workers")
    ids = [compose.post("/primes", {"n": 1000 + i}).json()["job_id"] for i in range(30)]
    for i in range(30):
        compose.wait_done("/primes", {"n": 1000 + i})
    names = {compose.redis_cli("hget", f"rq:job:{job_id}", "worker_name").strip() for job_id in ids}
    assert len(names) >= 2, f"one worker took the whole burst: {names}"


def digits_batch(count: int, start: int = 0) -> tuple[dict, list[int]]:
    """Held-out images (never trained on) with noise added, and the digits they show; a `start`
    of its own gives a test images no other one submitted (a finished result answers a repeat)."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, images, _, labels = train_test_split(
        digits.data, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    images, labels = images[start : start + count], labels[start : start + count]
    noisy = np.clip(images + np.random.default_rng(1).integers(-2, 3, size=images.shape), 0, 16)
    return {"items": [{"pixels": [int(v) for v in image]} for image in noisy]}, [int(y) for y in labels]


def classify(compose: ComposeProject, batch: dict, timeout: float = 120) -> list[dict]:
    def done():
        answer = requests.post(compose.url + "/digits/batch", json=batch, timeout=30).json()
        return answer["results"] if all(item["done"] for item in answer["results"]) else None

    return wait_until(done, timeout=timeout, interval=0.5, what="the digits batch")


def test_the_worker_for_every_queue_answers_digits_jobs(compose):
    """`docker compose up` serves every type, digits included: its worker's image has every model."""
    compose.up("--scale", "worker=1")
    wait_until(lambda: compose.workers() == dict.fromkeys(QUEUES, 1), timeout=60, what="a worker on every queue")
    batch, labels = digits_batch(100)
    results = classify(compose, batch)
    correct = sum(result["digit"] == label for result, label in zip(results, labels, strict=True))
    print(f"[docker] digits through compose: {correct} of 100 held-out noisy images right")
    assert correct >= 90
    (worker,) = container_ids(compose, "worker")
    memory = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", worker], capture_output=True, text=True
    ).stdout.strip()
    print(f"[docker] worker (every model) memory after the digits batch: {memory}")


def installed(compose: ComposeProject, service: str, requirements: str) -> str:
    """`name==version` of each package a requirements file pins, as installed in a service's image."""
    script = (
        "import importlib.metadata as m, sys\n"
        "for line in open(sys.argv[1]):\n"
        "    name = line.split('==')[0].strip()\n"
        "    if name and not name.startswith('#'):\n"
        "        try: print(f'{name}=={m.version(name)}')\n"
        "        except m.PackageNotFoundError: print(f'{name} missing')\n"
    )
    run = compose("--profile", "distributed", "run", "--rm", "--no-deps", service, "python", "-c", script,
                  requirements)  # fmt: skip
    return run.strip()


@pytest.mark.parametrize("model", MODELS, ids=lambda task_type: task_type.name)
def test_only_a_models_images_have_its_requirements(compose, model):
    """The web server and the other types' workers run an image without the model's requirements
    (and the web server is up and routing the model's path without them); the model's own image and
    the every-queue worker's have exactly the pinned versions."""
    pinned = [line for line in (ROOT / model.requirements).read_text().splitlines()
              if line.strip() and not line.startswith("#")]  # fmt: skip
    assert installed(compose, "worker", model.requirements).splitlines() == pinned
    assert installed(compose, f"worker-{model.name}", model.requirements).splitlines() == pinned
    for other in ["web", *(f"worker-{t.name}" for t in SHIPPED if not t.requirements)]:
        found = installed(compose, other, model.requirements).splitlines()
        assert found[0] == pinned[0].split("==")[0] + " missing", (other, found)  # the model's main package
    if model.examples:
        assert compose.post(f"/{model.path}", dict(model.examples[0])).status_code in (200, 202)


def image_size(image: str) -> int:
    inspected = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", image], capture_output=True,
                               text=True, check=True)  # fmt: skip
    return int(inspected.stdout)


def test_the_web_image_is_smaller_than_the_model_image(compose):
    sizes = {name: image_size(compose.image(name)) for name in IMAGES}
    for name, size in sizes.items():
        print(f"[docker] image {compose.image(name)}: {size / 1e6:.0f} MB")
    for name in IMAGES[2:]:
        gap = sizes[name] - sizes["app"]
        print(f"[docker] the web image is smaller than {name}'s by {gap / 1e6:.0f} MB")
        assert sizes["app"] < sizes[name]


def test_an_unknown_model_fails_the_build_with_one_clear_line():
    build = subprocess.run(
        ["docker", "build", "-q", "--force-rm", "--network", "host", "--build-arg", "MODELS=digits nosuch",
         "--build-arg", f"PYTHON_IMAGE={os.environ.get('PYTHON_IMAGE', 'python:3.11-slim')}", "."],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert build.returncode != 0
    assert "MODELS: no factorize_app/tasks/nosuch/requirements.txt" in build.stdout + build.stderr


def started_at(container: str) -> datetime:
    inspected = subprocess.run(["docker", "inspect", "--format", "{{.State.StartedAt}}", container],
                               capture_output=True, text=True, check=True)  # fmt: skip
    return datetime.fromisoformat(inspected.stdout.strip()[:26].rstrip("Z") + "+00:00")


def test_distributed_profile_routes_each_type_to_its_own_workers(compose):
    compose.up("--scale", "worker=0")
    wait_until(lambda: compose.workers() == dict.fromkeys(QUEUES, 0), timeout=60, what="workers to stop")
    compose("--profile", "distributed", "up", "-d", "--wait", "worker-primes")
    assert compose.post("/factorize", {"number": 1000003 * 1009}).json()["status"] == "queued"
    assert compose.wait_done("/primes", {"n": 10**7})["count"] == 664579
    time.sleep(1)
    assert compose.post("/factorize", {"number": 1000003 * 1009}).json()["status"] == "queued"
    compose("--profile", "distributed", "up", "-d", "--wait", "worker-factorization")
    assert compose.wait_done("/factorize", {"number": 1000003 * 1009})["factorization_str"] == "1009^1 1000003^1"
    # Digits waits for its own worker, which runs its own image and starts warm: the model file
    # was made at build, before the container started (no training at start).
    batch, labels = digits_batch(20, start=100)
    waiting = requests.post(compose.url + "/digits/batch", json=batch, timeout=30).json()["results"]
    assert {item["status"] for item in waiting} == {"queued"}
    compose("--profile", "distributed", "up", "-d", "--wait", "worker-digits")
    results = classify(compose, batch)
    assert sum(result["digit"] == label for result, label in zip(results, labels, strict=True)) >= 18
    (worker,) = container_ids(compose, "worker-digits")
    mtime = "import os; print(os.path.getmtime(os.environ['MODEL_DIR'] + '/digits-classifier.joblib'))"
    trained = compose("exec", "-T", "worker-digits", "python", "-c", mtime)
    assert datetime.fromtimestamp(float(trained), tz=UTC) < started_at(worker)
    compose("--profile", "distributed", "rm", "-sf", *(f"worker-{name}" for name in QUEUES))


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


def test_every_line_of_web_and_worker_is_json_with_one_insecure_warning(compose):
    # Before the tests that stop a worker or Redis: their warnings (a worker killed by its
    # watchdog found dead by the next one, 503s) are logged on purpose.
    for service in ("web", "worker"):
        lines = [line for line in compose("logs", "--no-log-prefix", service).splitlines() if line.strip()]
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                pytest.fail(f"{service} wrote a line that is not JSON: {line!r}")
        warnings = [e for e in events if e["level"] != "INFO"]
        assert warnings and {e["logger"] for e in warnings} == {"factorize_app.security"}, warnings
        assert not [e for e in events if "cleaning registries" in e["message"]]


def container_ids(compose: ComposeProject, service: str) -> list[str]:
    return compose("ps", "-q", service).split()


def health(container: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Health.Status}}", container], capture_output=True, text=True
    ).stdout.strip()


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
        memory = dict(
            line.split(":", 1) for line in compose.redis_cli("info", "memory").splitlines() if ":" in line
        )
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
