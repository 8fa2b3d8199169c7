"""Reload while developing: which processes a changed file restarts (watchfiles reports them).

A file in a model's folder restarts that model's worker (and the web server too when it is the
folder's `__init__.py`, the type's declaration, which the web imports for its URLs and forms).
Any other file of the service (`project/`, `factorize_app/`) restarts every process: they all
run the service's code.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path

import watchfiles

from factorize_app.tasks import TaskType

logger = logging.getLogger("factorize_app.devserver")

WEB = "web"


def module_file(dotted: str) -> Path | None:
    """The file of a module, found without importing it (its parent packages are imported)."""
    try:
        spec = importlib.util.find_spec(dotted)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin).resolve() if spec is not None and spec.origin else None


class Watch:
    """What to restart for a set of changed paths."""

    def __init__(self, *, root: Path, task_types: dict[str, TaskType]) -> None:
        self.service = [root / "project", root / "factorize_app"]
        self.folders: dict[str, Path] = {}  # task type -> its implementation's folder
        for name, task_type in task_types.items():
            implementation = module_file(task_type.implementation.partition(":")[0])
            if implementation is not None:
                self.folders[name] = implementation.parent

    @property
    def roots(self) -> list[Path]:
        return [*self.service, *(folder for folder in self.folders.values() if not self._in_service(folder))]

    def _in_service(self, path: Path) -> bool:
        return any(path.is_relative_to(root) for root in self.service)

    def affected(self, paths: set[Path], everything: set[str]) -> set[str]:
        names: set[str] = set()
        for path in paths:
            owners = [name for name, folder in self.folders.items() if path.is_relative_to(folder)]
            if owners:
                names.update(owners)
                if any(path == self.folders[name] / "__init__.py" for name in owners):
                    names.add(WEB)
            elif self._in_service(path):
                return set(everything)
        return names


def watch(watcher: Watch, *, restart, everything: set[str], stop: threading.Event) -> None:
    """Run in a thread: watch the roots and call restart(names) for each batch of changes."""
    changes_filter = watchfiles.PythonFilter(extra_extensions=(".html", ".lua", ".txt"))
    for changes in watchfiles.watch(
        *watcher.roots, watch_filter=changes_filter, stop_event=stop, yield_on_timeout=False
    ):
        paths = {Path(path).resolve() for _, path in changes}
        names = watcher.affected(paths, everything)
        if names:
            logger.info(
                "files changed: restarting", extra={"processes": sorted(names), "files": sorted(map(str, paths))[:5]}
            )
            restart(names)
