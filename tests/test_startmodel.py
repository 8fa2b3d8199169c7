"""`manage.py startmodel`: the folder it writes is a working model, discovered and served without
another edit, and it passes the model contract as generated; bad names are refused."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from factorize_app.management.commands import startmodel
from tests.conftest import PYTHON, ROOT, service_env

# Written into the real factorize_app/tasks/ (where discovery looks) and removed after.
NAME = "startmodel_selftest"
# The service's own settings (the test settings add test-only types to the registry).
SERVICE = {"DJANGO_SETTINGS_MODULE": "project.settings"}


@pytest.fixture
def generated():
    """The folder of a model startmodel writes in the test, removed afterwards (and before: a run
    killed half-way must not leave it to the next)."""
    folder = startmodel.TASKS_DIR / NAME
    shutil.rmtree(folder, ignore_errors=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, *args], cwd=ROOT, env=service_env(**env), capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("batch", [False, True], ids=["handle", "handle_batch"])
def test_a_generated_model_is_served_at_once_and_passes_the_contract(generated, batch):
    made = run("manage.py", "startmodel", NAME, "--no-deploy-files", *(["--batch"] if batch else []))
    assert made.returncode == 0, made.stderr
    assert sorted(path.name for path in generated.iterdir()) == ["__init__.py", "model.py", "requirements.txt"]
    assert "make test-model MODEL=startmodel_selftest" in made.stdout  # the next steps
    assert "POST /startmodel-selftest" in made.stdout
    assert ("def handle_batch" in (generated / "model.py").read_text()) is batch
    lint = subprocess.run([str(Path(PYTHON).parent / "ruff"), "check", str(generated)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    # No other file was edited, and the whole contract holds: served through the API and a real worker.
    contract = run(
        "-m", "pytest", "tests/test_model_contract.py", "-q", "-p", "no:cacheprovider", TEST_MODEL=NAME
    )
    assert contract.returncode == 0, contract.stdout[-3000:]
    assert " failed" not in contract.stdout and "passed" in contract.stdout
    if batch:
        assert "has no handle_batch" not in contract.stdout  # its handle_batch was checked, not skipped


def test_a_generated_model_gets_its_deployment_entries_at_once(generated):
    """startmodel writes the deployment files with the new model's worker (so the project's own
    check that they are current holds without another step); removing the model and running
    make deploy-files again restores them."""
    try:
        made = run("manage.py", "startmodel", NAME, **SERVICE)
        assert made.returncode == 0, made.stderr
        assert "wrote deploy/" in made.stdout and f"up worker-{NAME}" in made.stdout
        compose = (ROOT / "deploy" / "compose" / "workers.yml").read_text()
        assert f"worker-{NAME}:" in compose
        assert f"worker-{NAME.replace('_', '-')}" in (ROOT / "deploy" / "kubernetes" / "workers.yaml").read_text()
        assert run("manage.py", "deployfiles", "--check", **SERVICE).returncode == 0
    finally:
        shutil.rmtree(generated, ignore_errors=True)
        restored = run("manage.py", "deployfiles", **SERVICE)
    assert restored.returncode == 0, restored.stderr
    assert f"worker-{NAME}" not in (ROOT / "deploy" / "compose" / "workers.yml").read_text()
    assert run("manage.py", "deployfiles", "--check", **SERVICE).returncode == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["Sentiment"], "not a valid model name"),
        (["my-model"], "not a valid model name"),
        (["import"], "not a valid model name"),
        (["digits"], "already exists"),
        (["registry"], "already exists"),  # factorize_app/tasks/registry.py
        (["jobs"], "/jobs is taken"),
        (["queues"], "/queues is taken"),
        (["metrics"], "/metrics is taken"),
        (["static"], "/static is taken"),
        (["webhooks"], "/webhooks is taken"),
        (["new_model", "--path", "factorize"], "/factorize is taken"),  # another task type's
        (["new_model", "--path", "admin"], "/admin is taken"),
        (["new_model", "--path", "a/b"], "not a valid URL path"),
    ],
)
def test_bad_names_and_taken_paths_are_refused_and_nothing_is_written(args, message):
    before = sorted(path.name for path in startmodel.TASKS_DIR.iterdir())
    with pytest.raises(CommandError, match=message):
        call_command("startmodel", *args)
    assert sorted(path.name for path in startmodel.TASKS_DIR.iterdir()) == before


def test_every_routed_first_segment_is_refused():
    """Whatever the URL configuration answers (pages, probes, API routes, task types) is taken."""
    routed = startmodel.routed_segments()
    assert {"admin", "api", "api-auth", "django-rq", "healthz", "readyz", "metrics", "jobs", "queues"} <= routed
    assert {"factorize", "primes", "digits"} <= routed
