"""Sync mode (EXECUTION_MODE=sync): jobs run at once, in a pool of processes, with no queue and
no Redis."""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.pool
import threading
from typing import Any

from django.conf import settings

from factorize_app.jobs import result_files
from factorize_app.jobs.file_inputs import run_task_with_files
from factorize_app.jobs.states import FAILED, FINISHED, JobState
from factorize_app.tasks import TaskType, get_task_type


def compute(*, task_type: TaskType, data: dict[str, Any], client: str = "") -> JobState:
    """Run the handler now, with no queue and no Redis, within the type's job timeout.

    Handlers run in a small pool of processes that keep their models loaded (a thread cannot be
    stopped; a process can): a job that overruns its timeout is failed, and the pool replaced.
    Files it returns are stored there (result_files.store_outputs; their records need Redis), owned by
    `client`, who alone may read them: there is no job.
    """
    pool = _sync_pool()
    timeout = task_type.setting("job_timeout")
    try:
        result = pool.apply_async(_run_and_store, (task_type.name, data, client)).get(timeout)
    except multiprocessing.TimeoutError:
        _replace_sync_pool(pool)
        return JobState(None, task_type.name, FAILED, data, error=f"timed out after {timeout} s")
    except Exception as exc:  # a handler error is the job's failure, reported to the client
        return JobState(None, task_type.name, FAILED, data, error=f"{type(exc).__name__}: {exc}")
    return JobState(None, task_type.name, FINISHED, data, result=result)


def _run_and_store(task_name: str, data: dict[str, Any], client: str) -> Any:
    """In a pool process: the handler's result, its files stored (one try: the client is waiting)."""
    task_type = get_task_type(task_name)
    result = run_task_with_files(task_name, data)
    ttl = task_type.setting("result_ttl")
    return result_files.store_outputs(
        task_type=task_type, job_id="", result=result, ttl=ttl, owner=client, patience=0, spill=False
    )


_sync_lock = threading.Lock()
_sync_pools: list[multiprocessing.pool.Pool] = []
POOL_START_TIMEOUT = 120  # seconds for a new pool's processes to start Django: not a job's time


def _sync_pool() -> multiprocessing.pool.Pool:
    """The pool, started (its processes up, Django set up) before any job's timeout counts: a job
    right after a pool was replaced is not failed for the time its processes took to start."""
    with _sync_lock:
        if not _sync_pools:
            context = multiprocessing.get_context("spawn")  # no fork of a threaded server
            pool = context.Pool(settings.SYNC_PROCESSES, initializer=_start_sync_process)
            atexit.register(pool.terminate)
            pool.apply_async(_started).get(POOL_START_TIMEOUT)
            _sync_pools.append(pool)
        return _sync_pools[0]


def _started() -> bool:
    return True


def _replace_sync_pool(pool: multiprocessing.pool.Pool) -> None:
    with _sync_lock:
        if _sync_pools and _sync_pools[0] is pool:
            _sync_pools.clear()
    pool.terminate()  # stops the overrunning handler (and fails any other job it was running)


def _start_sync_process() -> None:
    import django

    django.setup()  # each type's setup() runs on its first job (run_task), then stays warm
