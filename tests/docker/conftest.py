"""The compose project of test_compose_engine.py and test_compose_outages.py: built and started
once, and taken down (with this run's images) right after the last test that uses it, so that the
modules with compose projects of their own do not run beside it."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import free_port
from tests.docker.compose_project import IMAGES, ComposeProject, offline_model_builds

_RUNNING: list[ComposeProject] = []
_LAST_USER: list[str] = []  # the node id of the last collected test that uses the project


def _take_down() -> None:
    while _RUNNING:
        project = _RUNNING.pop()
        project("--profile", "distributed", "down", "-v", "--remove-orphans", check=False)
        # This run's own images (not the base images; the build cache stays for the next run).
        subprocess.run(["docker", "image", "rm", *(project.image(name) for name in IMAGES)], capture_output=True)


def pytest_collection_modifyitems(items):
    _LAST_USER[:] = [item.nodeid for item in items if "compose" in getattr(item, "fixturenames", ())][-1:]


def pytest_runtest_teardown(item, nextitem):
    if _LAST_USER and item.nodeid == _LAST_USER[0]:
        _take_down()


@pytest.fixture(scope="session")
def compose(tmp_path_factory) -> Iterator[ComposeProject]:
    offline_models = offline_model_builds(tmp_path_factory.mktemp("compose") / "offline-models.yml")
    project = ComposeProject(f"factorize-test-{os.getpid()}", free_port(), offline_models)
    _RUNNING.append(project)
    try:
        started = time.monotonic()
        project("--profile", "distributed", "build")
        print(f"\n[docker] compose build ({', '.join(IMAGES)}): {time.monotonic() - started:.1f} s")
        print(f"[docker] compose up --wait: {project.up('--scale', 'worker=0'):.1f} s")
        yield project
    finally:
        _take_down()
