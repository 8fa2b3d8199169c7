"""A model worker's start: each listened-to type's model loaded once, before the worker registers
(so it counts as live only once it is ready), and what a killed predecessor left behind.
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback

from factorize_app import jobs, watchdog
from factorize_app.tasks import TaskType, ensure_setup, get_task_type

logger = logging.getLogger("factorize_app.worker")


def load_models(task_names: list[str]) -> None:
    for name in task_names:
        task_type = get_task_type(name)
        started = time.monotonic()
        _setup_or_report(task_type)
        logger.info("setup done", extra={"task_type": name, "duration_s": round(time.monotonic() - started, 3)})


def _setup_or_report(task_type: TaskType) -> None:
    """A type's model setup; if it raises, one log line with the traceback, the failure recorded
    where /queues and /readyz show it, and the worker exits (code 1) to be started again."""
    try:
        ensure_setup(task_type)
    except Exception as exc:
        logger.exception("setup failed: the worker exits", extra={"task_type": task_type.name})
        with contextlib.suppress(jobs.QueueUnavailable):
            error = f"{type(exc).__name__}: {exc}"
            jobs.record_setup_failure(task_name=task_type.name, error=error, traceback=traceback.format_exc())
        raise SystemExit(1) from exc


def drop_lost_predecessors(hostname: str, server: str) -> None:
    """A worker SIGKILLed (by the kernel for memory, or by its watchdog) leaves its registration
    behind: say so in one line, and drop it now rather than 3 beats later."""
    try:
        lost = jobs.drop_lost_workers(hostname=hostname, alive=watchdog.process_alive, server=server)
    except jobs.QueueUnavailable:
        return  # the maintenance of any worker drops it once Redis answers
    for worker in lost:
        logger.warning(
            "the last worker on this host died without unregistering (killed: out of memory?)",
            extra={"worker": worker.name, "pid": worker.pid, "queues": worker.queues,
                   "last_heartbeat": worker.last_heartbeat, "memory_limit": _memory_limit()},
        )  # fmt: skip


def _memory_limit() -> int | None:
    """This container's memory limit in bytes (cgroup v2), if it has one."""
    try:
        with open("/sys/fs/cgroup/memory.max") as limit:
            value = limit.read().strip()
    except OSError:
        return None
    return int(value) if value.isdigit() else None
