"""What the queue holds and whether it takes more: load and per-type stats (read-only, so they
answer on a full Redis), job durations, the backlog's age, Redis memory, the
admission of new jobs and worker liveness (the readiness probe: `probes`).

Admission: new submits are refused early, once Redis memory passes REDIS_MEMORY_HIGH_WATER of
maxmemory (`admit_new_jobs`), so that the results of jobs already running always have room to be
recorded. Polls, cancels and result writes never ask.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from rq.registry import CanceledJobRegistry, FailedJobRegistry, FinishedJobRegistry
from rq.utils import utcparse

from factorize_app.jobs import keys, scripts
from factorize_app.jobs.connection import (
    HOME,
    redis_for,
    rq_queue,
    server_connection,
    server_of,
    types_on,
)
from factorize_app.jobs.diagnostics import setup_error, setup_failures
from factorize_app.jobs.errors import FULL, QueueUnavailable, SubmitRefused, translate_outages
from factorize_app.jobs.reconcile import reconcile
from factorize_app.tasks import TaskType, task_types


@translate_outages
def load(*, task_type: TaskType) -> int:
    """Live pending jobs of a type: queued and not expired, plus running."""
    queued, started = counts(task_type)
    return queued + started


@translate_outages
def queue_stats(*, skip: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Per task type: queued, started, finished, failed, canceled and aborted jobs, live workers,
    and its workers' failed model setup if they fail (else null; the traceback is in their log);
    after a look for what RQ's tools changed (on a full Redis, the counts as they stand)."""
    with contextlib.suppress(QueueUnavailable):
        reconcile(skip=skip)
    stats = []
    shown = [task_type for task_type in task_types() if task_type.name not in skip]
    lost = {server: server_connection(server).hgetall(keys.WORKERS_LOST)
            for server in {server_of(task_type.name) for task_type in shown}}  # fmt: skip
    failures = setup_failures()
    for task_type in shown:
        queue = rq_queue(task_type.name)
        queued, started, workers = counts(task_type, with_workers=True)
        aborted = _live_count(task_type.name, keys.aborted(task_type.name))
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
                "workers_lost": int(lost[server_of(task_type.name)].get(task_type.name.encode(), 0)),
                "setup_error": setup_error(failures.get(task_type.name)),
            }
        )
    return stats


def _live_count(name: str, registry: str) -> int:
    """Members of a type's registry scored by expiry whose time has not come (as RQ's count cleans up)."""
    with redis_for(name).pipeline(transaction=False) as pipe:
        pipe.zremrangebyscore(registry, 0, time.time())
        pipe.zcard(registry)
        return int(pipe.execute()[1])


def counts(task_type: TaskType, with_workers: bool = False) -> tuple[int, ...]:
    """Live queued and running jobs of a type, and with `with_workers` its live workers."""
    name = task_type.name
    workers = keys.workers_of(name) if with_workers else None
    reply = scripts.LOAD(
        pending=keys.pending(name), started=keys.started(name), **scripts.CLOCK_KEYS, workers=workers,
        server=server_of(name),
    )  # fmt: skip
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


@dataclasses.dataclass(frozen=True)
class LostWorker:
    name: str
    pid: int | None
    queues: list[str]
    last_heartbeat: str


@translate_outages
def drop_lost_workers(
    *, hostname: str, alive: Callable[[int | None, datetime.datetime | None], bool], server: str = HOME
) -> list[LostWorker]:
    """Unregister at once the workers of this host whose process is gone (`alive` judges a
    registration's pid and birth) without unregistering: SIGKILLed, by the kernel for memory
    or by a watchdog. A worker's start calls this, before registering itself, so that a restart
    loop leaves no registrations to count; each is counted in its queues' `workers_lost`. On the
    `server` of the starting worker's queues."""
    conn = server_connection(server)
    worker_keys = [key.decode() for key in conn.smembers(keys.ALL_WORKERS)]
    with conn.pipeline(transaction=False) as pipe:
        for key in worker_keys:
            pipe.hmget(key, "hostname", "pid", "birth", "queues", "last_heartbeat", "death")
        rows = pipe.execute()
    lost: list[tuple[str, LostWorker]] = []
    for key, (host, pid, birth, queues, beat, death) in zip(worker_keys, rows, strict=True):
        if host is None or host.decode() != hostname or death is not None:
            continue
        pid_number = int(pid) if pid and pid.isdigit() else None
        born = utcparse(birth.decode()).replace(tzinfo=datetime.UTC) if birth else None
        if alive(pid_number, born):
            continue
        names = [name for name in (queues or b"").decode().split(",") if name]
        name = key.removeprefix(keys.WORKER_PREFIX)
        lost.append((key, LostWorker(name, pid_number, names, (beat or b"").decode())))
    if lost:
        with conn.pipeline(transaction=True) as pipe:
            for key, worker in lost:
                pipe.delete(key, keys.worker_executions(worker.name))
                pipe.srem(keys.ALL_WORKERS, key)
                for name in worker.queues:
                    pipe.srem(keys.workers_of(name), key)
                    pipe.hincrby(keys.WORKERS_LOST, name, 1)
            pipe.execute()
    return [worker for _, worker in lost]


@translate_outages
def job_durations(*, skip: frozenset[str] = frozenset()) -> dict[tuple[str, str], dict[str, float]]:
    """Per (task type, status): {bucket bound or "sum": value}, non-cumulative counts."""
    types = [task_type for task_type in task_types() if task_type.name not in skip]
    hashes = [redis_for(task_type.name).hgetall(keys.durations(task_type.name)) for task_type in types]
    durations: dict[tuple[str, str], dict[str, float]] = {}
    for task_type, fields in zip(types, hashes, strict=True):
        for field, value in fields.items():
            status, _, bucket = field.decode().partition(":")
            durations.setdefault((task_type.name, status), {})[bucket] = float(value)
    return durations


# --- for /metrics: how long the backlog has waited -------------------------------------------------

OLDEST_LOOKED_AT = 1000  # ids of a type's RQ list a scrape looks at, at most (oldest_queued.lua)


@translate_outages
def oldest_queued_ages(*, skip: frozenset[str] = frozenset()) -> dict[str, float]:
    """Per task type: seconds its oldest queued job has waited since it was enqueued (0: none
    queued). A queue's length does not tell a backlog that moves from one that is stuck."""
    names = [task_type.name for task_type in task_types() if task_type.name not in skip]
    replies = [scripts.OLDEST_QUEUED(list=keys.queue(name), limit=OLDEST_LOOKED_AT, server=server_of(name))
               for name in names]  # fmt: skip
    ages = {}
    for name, (enqueued_at, seconds, micros) in zip(names, replies, strict=True):
        now = int(seconds) + int(micros) / 1e6
        enqueued = utcparse(enqueued_at.decode()).replace(tzinfo=datetime.UTC).timestamp() if enqueued_at else now
        ages[name] = max(0.0, now - enqueued)
    return ages


_memory_lock = threading.Lock()
# Per server: (monotonic time read, used_memory, maxmemory).
_memory_seen: dict[str, tuple[float, int, int]] = {}


@translate_outages
def redis_memory(server: str = HOME) -> tuple[int, int]:
    """A Redis's used_memory and maxmemory (0: unlimited), read from INFO memory at most once a
    second per process: admission asks on every submit."""
    return _memory_reading(server)[1:]


def _memory_reading(server: str = HOME) -> tuple[float, int, int]:
    seen = _memory_seen.get(server)
    if seen is None or time.monotonic() - seen[0] >= 1.0:
        # One thread reads; the others keep the last reading meanwhile (or wait for the first).
        if _memory_lock.acquire(blocking=seen is None):
            try:
                info = server_connection(server).info("memory")
                seen = (time.monotonic(), int(info["used_memory"]), int(info.get("maxmemory", 0)))
                _memory_seen[server] = seen
            finally:
                _memory_lock.release()
        seen = seen or _memory_seen[server]
    return seen


# --- admission: room kept for what accepted jobs will still write ---------------------------------

# What a job adds to Redis when it ends (its result, in the job hash and RQ's result stream, its
# events, registry entries), measured per type on recently finished jobs (MEMORY USAGE); this
# until a job of the type has finished: Redis 7 gives a new stream ~4.8 KB, and an ended job has
# two (its result and its events), about 9 KB more than it held queued (a small factorization,
# measured). A queued job holds ~2.6 KB. And room for each live worker's heartbeats and buffers.
DEFAULT_JOB_GROWTH = 12 * 1024
QUEUED_JOB = 4 * 1024
WORKER_ROOM = 64 * 1024
# Jobs sampled per type, and how long a measurement (and the count of pending jobs) is kept.
GROWTH_SAMPLE = 5
RESERVE_SECONDS = 1.0
GROWTH_SECONDS = 10.0

_reserve_lock = threading.Lock()
_reserve_refresh = threading.Lock()
# Per server: (memory reading it goes with, bytes, added since).
_reserve: dict[str, tuple[float, float, int]] = {}
_growth: dict[str, tuple[float, int, int]] = {}  # type -> (monotonic time measured, ended job bytes, growth)


def _job_footprints(conn: redis.Redis, job_ids: list[bytes]) -> list[int]:
    with conn.pipeline(transaction=False) as pipe:
        for raw in job_ids:
            job_id = raw.decode()
            for key in (keys.job(job_id), keys.results(job_id), keys.events(job_id)):
                pipe.memory_usage(key, samples=0)
        sizes = pipe.execute()
    return [sum(size or 0 for size in sizes[i : i + 3]) for i in range(0, len(sizes), 3)]


def job_growth(task_type: TaskType) -> tuple[int, int]:
    """(bytes a job of the type holds once ended, bytes it adds between queued and ended), as
    measured on its latest finished and queued jobs, at most every GROWTH_SECONDS per process."""
    name = task_type.name
    seen = _growth.get(name)
    if seen is not None and time.monotonic() - seen[0] < GROWTH_SECONDS:
        return seen[1], seen[2]
    conn = redis_for(name)
    ended = _job_footprints(conn, conn.zrevrange(keys.finished(name), 0, GROWTH_SAMPLE - 1))
    queued = _job_footprints(conn, conn.lrange(keys.queue(name), 0, GROWTH_SAMPLE - 1))
    if ended:
        whole = sum(ended) // len(ended)
        growth = max(whole - (sum(queued) // len(queued) if queued else 0), whole // 4)
    else:
        whole, growth = DEFAULT_JOB_GROWTH + QUEUED_JOB, DEFAULT_JOB_GROWTH
    _growth[name] = (time.monotonic(), whole, growth)
    return whole, growth


def pending_reserve(server: str = HOME) -> int:
    """Bytes kept on a server for what accepted jobs will still write: each queued or running
    job's growth up to its end, and each live worker's room."""
    total = server_connection(server).scard(keys.ALL_WORKERS) * WORKER_ROOM
    for task_type in types_on(server):
        queued, started = counts(task_type)
        total += (queued + started) * job_growth(task_type)[1]
    return total


def memory_admits(
    task_type: TaskType | None = None, count: int = 0, server: str | None = None
) -> tuple[bool, int, int, int]:
    """Whether `count` more jobs of `task_type` fit under the high-water mark with room for every
    accepted job's end, on the type's server (else the home one); and the figures (used, reserved,
    maxmemory). The pending jobs are counted once a second per process; jobs this process admitted
    since are added as it admits them."""
    if server is None:
        server = server_of(task_type.name) if task_type is not None else HOME
    read_at, used, maxmemory = _memory_reading(server)
    if not maxmemory:
        return True, used, 0, 0
    # One thread counts (a few round trips, once a second); the others keep the last count meanwhile.
    last = _reserve.get(server, (0.0, 0.0, 0))
    if last[0] != read_at and _reserve_refresh.acquire(blocking=last[0] == 0.0):
        try:
            counted = pending_reserve(server)
            with _reserve_lock:
                _reserve[server] = (read_at, counted, 0)
        finally:
            _reserve_refresh.release()
    adding = count * (job_growth(task_type)[0] + QUEUED_JOB // 4) if task_type is not None else 0
    with _reserve_lock:
        last = _reserve.get(server, (0.0, 0.0, 0))
        reserved = last[1] + last[2]
        admits = used + reserved + adding < settings.REDIS_MEMORY_HIGH_WATER * maxmemory
        if admits and adding:
            _reserve[server] = (last[0], last[1], last[2] + adding)
    return admits, used, reserved, maxmemory


@translate_outages
def admit_new_jobs(*, task_type: TaskType | None = None, count: int = 0) -> None:
    """Refuse new jobs (SubmitRefused, FULL) unless Redis memory in use, plus room for what every
    accepted job will still write (its result, its events) and the workers' heartbeats, plus the
    `count` new jobs of `task_type`, stays under REDIS_MEMORY_HIGH_WATER of maxmemory: results of
    jobs already queued or running always have room to be recorded. Polls, cancels and result
    writes never ask. No maxmemory, no mark."""
    admits, used, reserved, maxmemory = memory_admits(task_type, count)
    if not admits:
        raise SubmitRefused(
            FULL,
            f"Redis uses {used} of its {maxmemory} bytes and keeps {reserved} for the jobs it holds: "
            "past the high-water mark",
        )
