"""The Docker files on a real engine (`make test-docker`): build, run, scale, route, persist.

The compose tests (this module, then test_compose_outages.py) share one compose project
(tests/docker/conftest.py) and run in file order; each leaves the project running with the web
server up. Images come from PYTHON_IMAGE / REDIS_IMAGE (the official ones, or the stand-ins of
scripts/docker-offline-images.sh). The images' sizes are printed (`[docker] image ...`).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time
from datetime import UTC, datetime

import pytest
import requests

from tests.conftest import ROOT, wait_until
from tests.docker.compose_project import (
    ADMIN,
    IMAGES,
    MODELS,
    QUEUES,
    SEED,
    SHIPPED,
    ComposeProject,
    container_ids,
    digits_batch,
)

pytestmark = pytest.mark.docker


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
        "output": [[2, 3], [3, 1], [73, 1], [233, 1]],  # the primes it streamed, beside the seed's fields
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
