"""Each model's Python environment for `make run`.

A model whose requirements resolve together with the service's (and those of the models already
placed there) shares the service's virtualenv. One whose requirements conflict with another
model's gets an environment of its own, `.venv-models/<name>`: the service's requirements plus
its own, and its worker runs from there. One whose requirements conflict with the service's
cannot run here: it is refused in one line naming the conflict, and the others still run.
Conflicts are found by uv's resolver (`uv pip compile`) before anything is installed, so nobody
gets a resolver traceback for somebody else's model.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from factorize_app.tasks import TaskType

logger = logging.getLogger("factorize_app.devserver")

UV = [sys.executable, "-m", "uv"]
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
STAMP = ".factorize-installed"  # in an environment: the hash of the requirements installed there


@dataclass(frozen=True)
class ModelEnv:
    """Where a task type's worker runs: `python` (None: refused, `refusal` says why); `own`: in
    an environment of its own."""

    task_name: str
    python: str | None
    own: bool = False
    refusal: str = ""


class Conflict(Exception):
    """The requirements files do not resolve together: the resolver's reason, in one line."""


def resolve(files: list[Path]) -> None:
    """Raise Conflict unless the requirements files resolve together (uv's resolver, no install).
    A resolver that cannot run (no index reachable) is logged and taken as no conflict: the
    install says the rest."""
    args = [*UV, "pip", "compile", "-q", "--python-version", PYTHON_VERSION, "-o", "/dev/null"]
    result = subprocess.run([*args, *map(str, files)], capture_output=True, text=True, timeout=300)
    if result.returncode == 0:
        return
    reason = _one_line(result.stderr)
    if "No solution found" in result.stderr:
        raise Conflict(reason)
    logger.warning(
        "could not check requirements for conflicts", extra={"files": [str(f) for f in files], "reason": reason}
    )


def _one_line(stderr: str) -> str:
    """uv's explanation ("Because you require x==1 and x==2, ...") as one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    cause = [line.removeprefix("cause:").strip() for line in lines if "Because" in line or line.startswith("cause:")]
    return " ".join(cause or lines[-1:]) or "the resolver failed"


def plan(*, task_types: list[TaskType], root: Path, envs_dir: Path) -> list[ModelEnv]:
    """Where each type's worker runs, in TASK_TYPES order (an earlier model keeps the shared
    environment; a later one that conflicts with it moves out)."""
    service = root / "requirements.txt"
    shared: list[tuple[str, Path]] = []
    envs = []
    for task_type in task_types:
        if not task_type.requirements:
            envs.append(ModelEnv(task_type.name, sys.executable))
            continue
        own = root / task_type.requirements
        try:
            resolve([service, *(path for _, path in shared), own])
        except Conflict as shared_conflict:
            try:
                resolve([service, own])
            except Conflict as conflict:
                refusal = f"task type {task_type.name!r} cannot run: {task_type.requirements} conflicts with the service's requirements.txt: {conflict}"  # noqa: E501
                envs.append(ModelEnv(task_type.name, None, refusal=refusal))
                continue
            others = [name for name, path in shared if _conflicts([service, path, own])] or ["another model"]
            logger.warning(
                "a model's requirements conflict with another's: it gets an environment of its own",
                extra={"task_type": task_type.name, "conflicts_with": others, "reason": str(shared_conflict)},
            )
            envs.append(ModelEnv(task_type.name, str(envs_dir / task_type.name / "bin" / "python"), own=True))
            continue
        shared.append((task_type.name, own))
        envs.append(ModelEnv(task_type.name, sys.executable))
    return envs


def _conflicts(files: list[Path]) -> bool:
    try:
        resolve(files)
    except Conflict:
        return True
    return False


def install(*, envs: list[ModelEnv], task_types: list[TaskType], root: Path, envs_dir: Path) -> None:
    """Install each model's requirements where its worker runs: the shared ones into this
    virtualenv (one uv call), each own environment created and filled once (a stamp of the
    requirements' hash, in `envs_dir`, skips it while they are unchanged)."""
    by_name = {task_type.name: task_type for task_type in task_types}
    service = root / "requirements.txt"
    shared = [
        root / by_name[env.task_name].requirements
        for env in envs
        if env.python is not None and not env.own and by_name[env.task_name].requirements
    ]
    if shared:
        _install_into(Path(sys.prefix), [service, *shared], stamp=envs_dir / "shared.installed")
    for env in envs:
        if env.own:
            prefix = Path(env.python).parent.parent
            _install_into(prefix, [service, root / by_name[env.task_name].requirements], stamp=prefix / STAMP)


def _install_into(prefix: Path, files: list[Path], *, stamp: Path) -> None:
    digest = hashlib.sha256(f"{prefix}\n".encode() + b"".join(path.read_bytes() for path in files)).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not (prefix / "bin" / "python").exists():
        logger.info("creating a model's environment", extra={"path": str(prefix)})
        subprocess.run([*UV, "venv", "-q", "--python", sys.executable, str(prefix)], check=True)
    python = str(prefix / "bin" / "python")
    requirements = [arg for path in files for arg in ("-r", str(path))]
    subprocess.run([*UV, "pip", "install", "-q", "--python", python, *requirements], check=True)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)
