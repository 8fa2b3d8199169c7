"""The Dockerfile, checked without an engine: hadolint, its layers, user, port and health check, the
build context, and the model requirements it installs."""

import re
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.utils.module_loading import import_string

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def shipped_task_types() -> list:
    return [import_string(path) for path in settings.DEFAULT_TASK_TYPES]


def pinned_packages(path: Path) -> set[str]:
    """The package names of a requirements file, every line of which pins one with ==."""
    names = set()
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", line), f"{path}: pinned with ==: {line}"
            names.add(line.split("==")[0].lower().replace("_", "-"))
    return names


def test_hadolint_is_clean():
    result = subprocess.run([str(BIN / "hadolint"), "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_non_root_images_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert text.index("ARG PYTHON_IMAGE=python:3.11-slim") < text.index("FROM ${PYTHON_IMAGE}")
    assert "/opt/venv" in text
    # The slow layers first, the ones every image shares first of all: the service's requirements,
    # then the models' (MODELS), then the source; only then the models' files are prepared.
    order = [
        "COPY requirements.txt",
        "pip install --no-compile -r /tmp/requirements.txt",
        "ARG MODELS=all",
        "COPY --from=model-requirements /requirements",
        "pip install --no-compile -r requirements.txt",
        "COPY . .",
        'python -m "factorize_app.tasks.$model.model"',
    ]
    positions = [text.index(step) for step in order]
    assert positions == sorted(positions), order
    assert "collectstatic" in text
    assert "MODEL_DIR=/app/models" in text
    assert "USER 10001" in text
    assert "EXPOSE 8080" in text
    assert "HEALTHCHECK" in text and "/healthz" in text


def test_dockerignore_keeps_local_state_out_of_the_context():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "**/__pycache__", "db.sqlite3", ".env", ".run", "models"} <= ignored
    # The whole source tree goes in (packages with their data files: .lua scripts, templates).
    assert not {"factorize_app", "project", "scripts", "*.lua"} & ignored


def test_the_model_requirements_the_dockerfile_installs_are_the_task_types_own():
    """The Dockerfile finds a model's requirements at factorize_app/tasks/<type>/requirements.txt and
    runs factorize_app.tasks.<type>.model at build: every requirements file there belongs to the
    type of that name, and every type that declares requirements keeps them there."""
    tasks = ROOT / "factorize_app" / "tasks"
    files = sorted(path.relative_to(ROOT).as_posix() for path in tasks.glob("*/requirements.txt"))
    declared = sorted(task_type.requirements for task_type in shipped_task_types() if task_type.requirements)
    assert files == declared
    for task_type in shipped_task_types():
        if task_type.requirements:
            assert task_type.requirements == f"factorize_app/tasks/{task_type.name}/requirements.txt"
            assert (tasks / task_type.name / "model.py").exists()
    service = pinned_packages(ROOT / "requirements.txt")
    for path in declared:
        model = pinned_packages(ROOT / path)
        assert model, f"{path} pins nothing"
        # Installed by a second pip run on top of the service's: a package pinned in both would
        # replace the service's version in that model's image only.
        assert not model & service, f"{path} repeats the service's requirements: {sorted(model & service)}"
