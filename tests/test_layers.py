"""The layers, checked on the source: the API and the workers never import each other; the
webhooks area never imports the API and uses the job service by its public names only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "factorize_app"
# What runs in the worker processes only (the model worker, a module or a package).
WORKER_MODULES = ("factorize_app.worker", "factorize_app.webhooks.worker", "factorize_app.webhooks.attempts")


def sources(*parts: str) -> list[Path]:
    path = PACKAGE.joinpath(*parts)
    return sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]


def imported(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every import in a file: a plain `import m` gives (m, "")."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import"
            found += [(node.module or "", alias.name) for alias in node.names]
    return found


def within(module: str, name: str, prefixes: tuple[str, ...]) -> bool:
    return any(full == p or full.startswith(p + ".") for full in (module, f"{module}.{name}") for p in prefixes)


@pytest.mark.parametrize("path", sources("api"), ids=str)
def test_the_api_imports_no_worker(path):
    assert not [pair for pair in imported(path) if within(*pair, WORKER_MODULES)]


@pytest.mark.parametrize("path", [*sources("worker"), *sources("webhooks")], ids=str)
def test_no_worker_and_nothing_of_the_webhooks_area_imports_the_api(path):
    assert not [pair for pair in imported(path) if within(*pair, ("factorize_app.api",))]


@pytest.mark.parametrize("path", sources("webhooks"), ids=str)
def test_the_webhooks_area_uses_the_job_service_by_public_names(path):
    private = [
        (module, name)
        for module, name in imported(path)
        if within(module, "", ("factorize_app.jobs",))
        and any(part.startswith("_") for part in [*module.split("."), name] if part != "__future__")
    ]
    assert not private
