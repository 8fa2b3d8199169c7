"""The README's two commands install what they need and no more."""

import subprocess

from tests.conftest import ROOT


def dry_run(target: str, tmp_path) -> str:
    """What `make <target>` would run on a machine with no virtualenv yet."""
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "-n", target, f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return result.stdout


def test_make_run_installs_the_service_requirements_only(tmp_path):
    commands = dry_run("run", tmp_path)
    assert "-r requirements.txt" in commands
    assert "tests/requirements.txt" not in commands


def test_make_test_adds_the_test_tools(tmp_path):
    commands = dry_run("test", tmp_path)
    assert "-r requirements.txt" in commands and "-r tests/requirements.txt" in commands
