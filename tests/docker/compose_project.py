"""The compose project the engine tests share (tests/docker/conftest.py starts it once), and what
they share about it: the task types it deploys, the images it builds, the seed's example, held-out
digits, the containers of a service and their health."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from django.utils.module_loading import import_string

from project.settings import DEFAULT_TASK_TYPES
from tests.conftest import ROOT, poll_until_done

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


def container_ids(compose: ComposeProject, service: str) -> list[str]:
    return compose("ps", "-q", service).split()


def health(container: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Health.Status}}", container], capture_output=True, text=True
    ).stdout.strip()


# Signals the worker process inside its container (PID 1 is the init, which cannot pass on SIGSTOP).
