"""The Docker files, checked without an engine: hadolint, and the compose file as Compose parses it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.utils.module_loading import import_string

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def compose_config(*args: str) -> dict:
    result = subprocess.run(
        [str(BIN / "docker-compose"), "-f", "docker-compose.yml", *args, "config", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT)},  # no .env, no SECRET_KEY: the fresh-clone case
        check=True,
    )
    return json.loads(result.stdout)


def test_hadolint_is_clean():
    result = subprocess.run([str(BIN / "hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_one_non_root_image_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert text.index("ARG PYTHON_IMAGE=python:3.11-slim") < text.index("FROM ${PYTHON_IMAGE}")
    assert "/opt/venv" in text
    # requirements.txt is copied and installed before the rest of the source.
    assert text.index("COPY requirements.txt") < text.index("pip install") < text.index("COPY . .")
    assert "collectstatic" in text
    assert "USER 10001" in text
    assert "EXPOSE 8080" in text
    assert "HEALTHCHECK" in text and "/healthz" in text


def test_dockerignore_keeps_local_state_out_of_the_context():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "**/__pycache__", "db.sqlite3", ".env"} <= ignored


def test_compose_file_is_valid_and_has_no_version_key():
    assert "version:" not in (ROOT / "docker-compose.yml").read_text().split("services:")[0]
    default = compose_config()
    assert set(default["services"]) == {"redis", "web", "worker"}


def test_redis_persists_and_never_evicts():
    redis = compose_config()["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(volume["target"] == "/data" and volume["type"] == "volume" for volume in redis["volumes"])
    assert redis["healthcheck"]["test"][-1] == "ping"


def test_web_publishes_8123_and_waits_for_redis():
    web = compose_config()["services"]["web"]
    assert {k: web["ports"][0][k] for k in ("published", "target")} == {"published": "8123", "target": 8080}
    assert web["depends_on"]["redis"]["condition"] == "service_healthy"
    assert web["image"] == "factorize:latest"
    assert web["environment"]["SECRET_KEY"] == ""  # no secret in the file: development default in settings


def test_worker_is_scalable():
    worker = compose_config()["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert worker["command"] == ["python", "manage.py", "rqworker"]
    assert worker["image"] == "factorize:latest"


def test_distributed_profile_has_one_worker_service_per_task_type():
    services = compose_config("--profile", "distributed")["services"]
    shipped = [import_string(path) for path in settings.DEFAULT_TASK_TYPES]
    assert shipped
    for task_type in shipped:
        service = services[f"worker-{task_type.name}"]
        assert service["command"] == ["python", "manage.py", "rqworker", task_type.name]
        assert service["profiles"] == ["distributed"]
        assert "container_name" not in service


@pytest.mark.parametrize("name", [".env.example"])
def test_env_example_holds_no_secret(name):
    values = dict(
        line.split("=", 1) for line in (ROOT / name).read_text().splitlines() if line and not line.startswith("#")
    )
    assert values["SECRET_KEY"] == ""
    assert values["DJANGO_SUPERUSER_PASSWORD"] == ""
