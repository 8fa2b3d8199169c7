"""What the queue holds and whether it takes more: load and per-type stats (read-only, so they
answer on a full Redis), job durations, Redis memory, the admission of new jobs, worker liveness
and the readiness probe.

Admission: new submits are refused early, once Redis memory passes REDIS_MEMORY_HIGH_WATER of
maxmemory (`admit_new_jobs`), so that the results of jobs already running always have room to be
recorded. Polls, cancels and result writes never ask.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import functools
import threading
import time
from typing import Any

import redis
from django.conf import settings
from rq.registry import CanceledJobRegistry, FailedJobRegistry, FinishedJobRegistry
from rq.utils import utcparse

from factorize_app.jobs import keys
from factorize_app.jobs.connection import CLOCK_KEYS, OUTAGE_GAP, lua, redis_client, rq_queue, script
from factorize_app.jobs.diagnostics import setup_error, setup_failures
from factorize_app.jobs.errors import FULL, QueueUnavailable, SubmitRefused, translate_outages, write_refusal
from factorize_app.jobs.reconcile import reconcile
from factorize_app.tasks import TaskType, task_types

_LOAD = lua("load")


@translate_outages
def load(*, task_type: TaskType) -> int:
    """Live pending jobs of a type: queued and not expired, plus running."""
    queued, started = counts(task_type)
    return queued + started


@translate_outages
def queue_stats() -> list[dict[str, Any]]:
    """Per task type: queued, started, finished, failed, canceled and aborted jobs, live workers,
    and its workers' failed model setup if they fail (else null; the traceback is in their log);
    after a look for what RQ's tools changed (on a full Redis, the counts as they stand)."""
    with contextlib.suppress(QueueUnavailable):
        reconcile()
    stats = []
    failures = setup_failures()
    for task_type in task_types():
        queue = rq_queue(task_type.name)
        queued, started, workers = counts(task_type, with_workers=True)
        aborted = _live_count(keys.aborted(task_type.name))
        stats.append(
            {
                "name": task_type.name,
                "queued": queued,
                "started": started,
                "finished": FinishedJobRegistry(queue=queue).count,  # RQ's counts clean up first
                "failed": FailedJobRegistry(queue=queue).count,
                # RQ's canceled registry holds the aborted jobs too (its dashboard counts them there).
                "canceled": max(0, CanceledJobRegistry(queue=queue).count - aborted),
                "aborted": aborted,
                "workers": workers,
                "setup_error": setup_error(failures.get(task_type.name)),
            }
        )
    return stats


def _live_count(registry: str) -> int:
    """Members of a registry scored by expiry whose time has not come (as RQ's count cleans up)."""
    with redis_client().pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(registry, 0, time.time())
        pipe.zcard(registry)
        return int(pipe.execute()[1])


def counts(task_type: TaskType, with_workers: bool = False) -> tuple[int, ...]:
    """Live queued and running jobs of a type, and with `with_workers` its live workers."""
    name = task_type.name
    script_keys = [keys.pending(name), keys.started(name), *CLOCK_KEYS]
    if with_workers:
        script_keys.append(keys.workers_of(name))
    reply = script(_LOAD)(keys=script_keys, args=[OUTAGE_GAP])
    found = (int(reply[0]), int(reply[1]))
    if with_workers:
        now, beats = int(reply[2]), reply[3]
        found += (sum(beat_is_recent(beat, now) for beat in beats),)
    return found


def beat_is_recent(last_heartbeat: bytes, now: float) -> bool:
    """A worker is live while it heartbeats: its last beat (RQ's timestamp) lies within
    WORKER_LIVENESS (three heartbeats) of `now` (Redis time)."""
    try:
        beat = utcparse(last_heartbeat.decode()).replace(tzinfo=datetime.UTC).timestamp()
    except ValueError:
        return False
    return now - beat <= worker_liveness()


def worker_liveness() -> float:
    """Seconds after its last heartbeat that a worker stops counting as live: three beats."""
    return 3 * settings.WORKER_HEARTBEAT


@translate_outages
def job_durations() -> dict[tuple[str, str], dict[str, float]]:
    """Per (task type, status): {bucket bound or "sum": value}, non-cumulative counts."""
    with redis_client().pipeline(transaction=False) as pipe:
        for task_type in task_types():
            pipe.hgetall(keys.durations(task_type.name))
        hashes = pipe.execute()
    durations: dict[tuple[str, str], dict[str, float]] = {}
    for task_type, fields in zip(task_types(), hashes, strict=True):
        for field, value in fields.items():
            status, _, bucket = field.decode().partition(":")
            durations.setdefault((task_type.name, status), {})[bucket] = float(value)
    return durations


_memory_lock = threading.Lock()
_memory_seen: tuple[float, int, int] | None = None  # (monotonic time read, used_memory, maxmemory)


@translate_outages
def redis_memory() -> tuple[int, int]:
    """Redis's used_memory and maxmemory (0: unlimited), read from INFO memory at most once a
    second per process: admission asks on every submit."""
    global _memory_seen
    seen = _memory_seen
    if seen is None or time.monotonic() - seen[0] >= 1.0:
        # One thread reads; the others keep the last reading meanwhile (or wait for the first).
        if _memory_lock.acquire(blocking=seen is None):
            try:
                info = redis_client().info("memory")
                seen = _memory_seen = (time.monotonic(), int(info["used_memory"]), int(info.get("maxmemory", 0)))
            finally:
                _memory_lock.release()
        seen = seen or _memory_seen
    return seen[1], seen[2]


def _memory_admits() -> bool:
    used, maxmemory = redis_memory()
    return not maxmemory or used < settings.REDIS_MEMORY_HIGH_WATER * maxmemory


def admit_new_jobs() -> None:
    """Refuse new jobs (SubmitRefused, FULL) once Redis memory passes REDIS_MEMORY_HIGH_WATER of
    maxmemory, leaving the rest for results of jobs already queued or running. Polls, cancels
    and result writes never ask. No maxmemory, no mark."""
    if not _memory_admits():
        used, maxmemory = redis_memory()
        raise SubmitRefused(FULL, f"Redis uses {used} of its {maxmemory} bytes, past the high-water mark")


def ping() -> None:
    """Raise QueueUnavailable unless Redis answers."""
    translate_outages(redis_client().ping)()


_probe_lock = threading.Lock()
_probe_future: concurrent.futures.Future | None = None


def probe(*, timeout: float) -> str | None:
    """For /readyz, within `timeout` seconds whatever the socket timeout or a slow name lookup:
    None if Redis takes writes and admits new jobs, else the refusal (FULL, READ_ONLY,
    PERSISTENCE); QueueUnavailable if Redis does not answer in time.

    The check runs in a thread of its own; while one hangs (a name that does not resolve, a hung
    Redis), later probes wait on it instead of piling up more threads.
    """
    global _probe_future
    with _probe_lock:
        if _probe_future is None or _probe_future.done():
            _probe_future = _probe_executor().submit(_probe_once)
        future = _probe_future
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        raise QueueUnavailable(f"the job queue is unavailable: Redis did not answer within {timeout:g} s") from None


@functools.cache
def _probe_executor() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="redis-probe")


@translate_outages
def _probe_once() -> str | None:
    try:
        redis_client().set(keys.PROBE, "1", px=60_000)  # a write: refused exactly when submits would be
    except redis.exceptions.ResponseError as exc:
        reason = write_refusal(exc)
        if reason is None:
            raise
        return reason
    return None if _memory_admits() else FULL
