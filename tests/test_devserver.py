"""`make run` (manage.py devserver): one worker per model, restarted with back-off and reported
when its setup raises, reloaded when its folder changes, and its own environment (or a one-line
refusal) when its requirements conflict.

The models here are test-only packages written into a temporary directory on PYTHONPATH, with a
settings module of their own that registers them beside `primes`; nothing is written into
factorize_app/tasks/.
"""

from __future__ import annotations

import importlib.metadata
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from factorize_app.devserver.reload import Watch
from factorize_app.devserver.supervisor import Child, Supervisor
from factorize_app.tasks import get_task_type
from tests.conftest import PYTHON, ROOT, free_port, service_env, wait_until

pytestmark = pytest.mark.timeout(240)

DECLARATION = """
from factorize_app.tasks import TaskType
from tests.task_types import EchoResult, TagInput

TASK_TYPE = TaskType(
    name="{name}",
    path="{name}",
    description="A test model.",
    input_serializer=TagInput,
    result_serializer=EchoResult,
    implementation="{name}.model:Model",
    requirements={requirements!r},
)
"""
BROKEN_MODEL = """
import os

class Model:
    def setup(self):
        raise RuntimeError("model weights missing")

    def handle(self, data):
        return {"echo": data["tag"], "pid": os.getpid()}
"""
WORKING_MODEL = BROKEN_MODEL.replace('raise RuntimeError("model weights missing")', "self.ready = True")


def write_model(models: Path, name: str, model: str, requirements: str | None = None) -> None:
    package = models / name
    package.mkdir(parents=True, exist_ok=True)
    path = None
    if requirements is not None:
        (package / "requirements.txt").write_text(requirements)
        path = str(package / "requirements.txt")  # absolute: `root / path` is the path itself
    (package / "__init__.py").write_text(DECLARATION.format(name=name, requirements=path))
    (package / "model.py").write_text(model)


def settings_for(models: Path, *names: str) -> None:
    entries = ["factorize_app.tasks.primes.TASK_TYPE", *(f"{name}.TASK_TYPE" for name in names)]
    (models / "devserver_settings.py").write_text(f"from tests.settings import *  # noqa\nTASK_TYPES = {entries!r}\n")


def devserver_env(models: Path, **extra: str) -> dict[str, str]:
    return service_env(
        DJANGO_SETTINGS_MODULE="devserver_settings",
        PYTHONPATH=f"{models}:{ROOT}",
        HOST="127.0.0.1",
        WEB_CONCURRENCY="1",
        LOG_FORMAT="json",
        MODEL_ENVS_DIR=str(models / "envs"),
        **extra,
    )


class DevServer:
    def __init__(self, process: subprocess.Popen, log_path: Path, url: str) -> None:
        self.process, self.log_path, self.url = process, log_path, url

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> list[dict]:
        found = []
        for line in self.log.splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def queue(self, name: str) -> dict:
        return next(q for q in requests.get(f"{self.url}/queues", timeout=10).json() if q["name"] == name)


@contextmanager
def devserver(models: Path, tmp_path: Path, *args: str) -> Iterator[DevServer]:
    port = free_port()
    log_path = tmp_path / "devserver.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [PYTHON, "manage.py", "devserver", *args],
            cwd=ROOT,
            env=devserver_env(models, PORT=str(port)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = DevServer(process, log_path, f"http://127.0.0.1:{port}")

    def answers() -> bool:
        assert process.poll() is None, f"devserver exited:\n{server.log}"
        try:
            return requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(answers, timeout=90, what="the web server to answer")
        yield server
    finally:
        process.send_signal(signal.SIGINT)  # as Ctrl-C
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_model_whose_setup_raises_is_restarted_with_backoff_and_reported_while_another_model_serves(tmp_path):
    models = tmp_path / "models"
    write_model(models, "flaky", BROKEN_MODEL)
    settings_for(models, "flaky")
    with devserver(models, tmp_path, "--no-reload") as server:
        # Restarted after 1 s, 2 s, 4 s: the back-off doubles.
        wait_until(lambda: "starting it again in 4 s" in server.log, timeout=90, what="the third restart")
        delays = [r["restart_in_s"] for r in server.records() if r.get("child") == "flaky" and "restart_in_s" in r]
        assert delays[:3] == [1, 2, 4], delays
        # Reported in /queues, with how often it failed, and no worker counted for it.
        flaky = server.queue("flaky")
        assert flaky["setup_error"]["error"] == "RuntimeError: model weights missing"
        assert flaky["setup_error"]["restarts"] >= 3 and flaky["setup_error"]["since"]
        assert flaky["workers"] == 0 and "traceback" not in flaky["setup_error"]
        # /readyz: still 200, degraded, naming the type.
        ready = requests.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded" and "flaky" in ready.json()["setup_errors"]
        assert "flaky" in ready.json()["detail"]
        # One log line with the traceback, from the worker.
        failed = [r for r in server.records() if r["message"].startswith("setup failed")]
        assert failed and failed[0]["task_type"] == "flaky"
        assert "Traceback" in failed[0]["exception"] and "model weights missing" in failed[0]["exception"]
        # The other model's worker serves meanwhile; the broken one's job waits.
        wait_until(lambda: server.queue("primes")["workers"] == 1, timeout=60, what="the primes worker")
        answer = requests.post(f"{server.url}/primes", json={"n": 100}, headers={"Prefer": "wait=30"}, timeout=40)
        assert answer.json()["done"] and answer.json()["count"] == 25
        waiting = requests.post(f"{server.url}/flaky", json={"tag": "x"}, timeout=10).json()
        assert waiting["status"] == "queued"


def test_a_change_in_a_models_folder_restarts_its_worker_and_no_other(tmp_path, redis_conn):
    models = tmp_path / "models"
    write_model(models, "flaky", BROKEN_MODEL)
    settings_for(models, "flaky")
    with devserver(models, tmp_path) as server:
        wait_until(lambda: server.queue("flaky")["setup_error"], timeout=60, what="the setup error reported")
        wait_until(lambda: server.queue("primes")["workers"] == 1, timeout=60, what="the primes worker")
        primes_workers = {w.decode() for w in redis_conn.smembers("rq:workers:primes")}
        # Fixing the model restarts its worker at once (not after its back-off), which now sets up.
        (models / "flaky" / "model.py").write_text(WORKING_MODEL)
        wait_until(lambda: server.queue("flaky")["workers"] == 1, timeout=60, what="the fixed worker")
        assert server.queue("flaky")["setup_error"] is None
        answer = requests.post(f"{server.url}/flaky", json={"tag": "fixed"}, headers={"Prefer": "wait=30"}, timeout=40)
        assert answer.json()["echo"] == "fixed"
        assert {w.decode() for w in redis_conn.smembers("rq:workers:primes")} == primes_workers
        assert any(r.get("processes") == ["flaky"] for r in server.records()), "no reload logged"


def test_requirements_that_conflict_with_the_services_are_refused_in_one_line(tmp_path):
    models = tmp_path / "models"
    service_redis = next(
        line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("redis==")
    )
    write_model(models, "clashing", WORKING_MODEL, requirements="redis==7.0.0\n")
    settings_for(models, "clashing")
    result = subprocess.run(
        [PYTHON, "manage.py", "devserver", "--envs-only"],
        cwd=ROOT,
        env=devserver_env(models),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    refusals = [line for line in result.stderr.splitlines() if "cannot run" in line]
    assert len(refusals) == 1, result.stderr
    assert "'clashing'" in refusals[0] and "redis==7.0.0" in refusals[0] and service_redis in refusals[0]
    assert "Traceback" not in result.stderr


def test_a_model_conflicting_with_another_model_gets_its_own_environment(tmp_path):
    """Two models pin different versions of one package: the first keeps the shared virtualenv
    (it pins the version installed there, so this test installs nothing into it); the second
    gets an environment of its own with the service's requirements and its own, and its worker
    runs from there."""
    models = tmp_path / "models"
    installed = importlib.metadata.version("attrs")
    other = "25.4.0" if installed != "25.4.0" else "25.3.0"
    write_model(models, "first", WORKING_MODEL, requirements=f"attrs=={installed}\n")
    second = WORKING_MODEL.replace('data["tag"]', "attrs.__version__")
    write_model(models, "second", second.replace("import os", "import os\nimport attrs"), f"attrs=={other}\n")
    settings_for(models, "first", "second")
    with devserver(models, tmp_path, "--no-reload") as server:
        assert (models / "envs" / "second" / "bin" / "python").exists()
        answer = requests.post(f"{server.url}/second", json={"tag": "x"}, headers={"Prefer": "wait=60"}, timeout=70)
        assert answer.json()["echo"] == other  # the model's own version, in its worker
        log = [r for r in server.records() if r["message"].startswith("a model's requirements conflict")]
        assert log and log[0]["task_type"] == "second" and log[0]["conflicts_with"] == ["first"]


def test_a_worker_that_exits_before_its_setup_is_reported_by_the_supervisor(tmp_path):
    """A model whose package is missing never reaches its setup: the worker exits with one line,
    which the supervisor records as the type's setup error."""
    models = tmp_path / "models"
    write_model(models, "needy", "import package_nobody_installed\n\n" + WORKING_MODEL)
    settings_for(models, "needy")
    with devserver(models, tmp_path, "--no-reload") as server:
        error = wait_until(lambda: server.queue("needy")["setup_error"], timeout=60, what="the exit reported")
        assert error["error"].startswith("CommandError: task type 'needy' needs the package 'package_nobody_installed'")
        ready = requests.get(f"{server.url}/readyz", timeout=10).json()
        assert ready["status"] == "degraded" and "needy" in ready["setup_errors"]
        wait_until(lambda: server.queue("needy")["setup_error"]["restarts"] >= 2, timeout=60, what="a restart")


def test_the_backoff_doubles_from_one_second_to_a_minute_and_starts_over_after_a_long_run():
    child = Child("flaky", ["true"], {}, ROOT, started_at=time.monotonic())
    assert [Supervisor._next_delay(child) for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    child.started_at = time.monotonic() - 61  # it ran for a minute before it exited
    assert Supervisor._next_delay(child) == 1


def test_what_a_change_restarts():
    types = {name: get_task_type(name) for name in ("primes", "digits")}
    watch = Watch(root=ROOT, task_types=types)
    everything = {"web", "webhooks", "primes", "digits"}
    tasks = ROOT / "factorize_app" / "tasks"
    assert watch.affected({tasks / "digits" / "model.py"}, everything) == {"digits"}
    assert watch.affected({tasks / "primes" / "__init__.py"}, everything) == {"primes", "web"}
    assert watch.affected({ROOT / "factorize_app" / "worker" / "loop.py"}, everything) == everything
    assert watch.affected({ROOT / "project" / "settings.py", tasks / "digits" / "model.py"}, everything) == everything
    assert watch.affected({ROOT / "docs" / "development.md"}, everything) == set()
