"""The task types found on disk: every package under `factorize_app/tasks/` that declares a
`TASK_TYPE`, so adding a model is adding its folder and nothing else.

The declarations are read, not imported: the settings load before Django (and a declaration
imports Django REST framework), so a package counts when its `__init__.py` assigns or imports the
name `TASK_TYPE` at top level. The registry imports and checks them (factorize_app.tasks.registry).
"""

from __future__ import annotations

import ast
from pathlib import Path

NAME = "TASK_TYPE"


def declares_task_type(init_file: Path) -> bool:
    """Whether a package's `__init__.py` binds TASK_TYPE at top level (an assignment or an import)."""
    try:
        tree = ast.parse(init_file.read_bytes(), filename=str(init_file))
    except (OSError, SyntaxError, ValueError):
        return True  # let the import report what is wrong with it, rather than leave it out silently
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == NAME for t in node.targets):
            return True
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == NAME:
            return True
        if isinstance(node, ast.ImportFrom) and any((alias.asname or alias.name) == NAME for alias in node.names):
            return True
    return False


def discover_task_types(tasks_dir: Path, package: str = "factorize_app.tasks") -> list[str]:
    """Dotted paths of the TASK_TYPE of each task package in `tasks_dir`, in order of folder name
    (the order of the queues, the URLs and the docs)."""
    found = []
    for init_file in sorted(tasks_dir.glob("*/__init__.py")):
        folder = init_file.parent.name
        if folder.isidentifier() and not folder.startswith("_") and declares_task_type(init_file):
            found.append(f"{package}.{folder}.{NAME}")
    return found
