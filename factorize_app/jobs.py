"""The job service: the one module that talks to RQ and Redis.

Ids, submit-or-poll, status, load, TTL refresh and cancel live here; the API and the
worker call these functions with plain values and get plain values back.

Load without scanning: RQ's queue list keeps the ids of expired jobs until a worker pops
them, so its length over-counts. Each task type therefore keeps a sorted set of its
queued job ids scored by expiry deadline (the same deadline as the job hash's EXPIRE,
both set by one script); live queued jobs are the members whose deadline lies ahead.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import django_rq
import redis
from django.conf import settings
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from factorize_app.tasks import TaskType, UnknownTaskType, get_task_type, run_task, task_types

PENDING_KEY = "factorize:pending:{}"
DURATION_KEY = "factorize:metrics:job_duration:{}"
# Upper bounds (seconds) of the job duration histogram's buckets.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Plain strings: RQ's JobStatus enum hashes by member name, so it does not mix with str in sets.
QUEUED, STARTED, FINISHED, FAILED = "queued", "started", "finished", "failed"
DONE_STATUSES = {FINISHED, FAILED, RQStatus.STOPPED.value, RQStatus.CANCELED.value}
_JOB_ID = re.compile(r"^(?P<task>[A-Za-z0-9_]+)-(?P<digest>[0-9a-f]{32})$")

# One round trip per poll. Refresh a queued job's TTL and its pending deadline together,
# atomically, so a job a worker has just started (and PERSISTed) is never given an expiry; any
# other status leaves the pending set. Answer the status, the input (kept in the description),
# the outcome the worker cached as JSON, and the type's load (live queued + running).
_POLL_SCRIPT = """
local fields = redis.call('HMGET', KEYS[1], 'status', 'description', 'factorize_outcome')
local status = fields[1]
if not status then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
if status == 'queued' then
  local ttl = tonumber(ARGV[1])
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[2])
else
  redis.call('ZREM', KEYS[2], ARGV[2])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local load = redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])
return {status, fields[2] or '', fields[3] or '', load}
"""

# The worker's bookkeeping after a job, in one round trip: cache the outcome as JSON in the job
# hash (if the hash still exists) and count the run time into the type's duration histogram.
_RECORD_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'factorize_outcome', ARGV[1])
end
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('HINCRBYFLOAT', KEYS[2], ARGV[3], ARGV[4])
return 1
"""

# Live pending = queued jobs whose deadline is ahead (expired ones are trimmed) + running jobs.
# With a third key (the queue's worker set), also the workers whose registration has not expired.
_LOAD_SCRIPT = """
local t = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(t[1]) + tonumber(t[2]) / 1e6)
local counts = {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])}
if KEYS[3] then
  local live = 0
  for _, worker_key in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    live = live + redis.call('EXISTS', worker_key)
  end
  counts[3] = live
end
return counts
"""


class QueueUnavailable(Exception):
    """Redis did not answer; the caller should report an outage, not a bug."""


class JobNotFound(LookupError):
    pass


class JobNotCancellable(Exception):
    def __init__(self, status: str):
        super().__init__(f"only queued jobs can be cancelled; this job is {status}")
        self.status = status


@dataclass(frozen=True)
class JobState:
    """What a client sees of one job."""

    job_id: str | None
    task_name: str
    status: str
    input: dict[str, Any]
    result: dict[str, Any] | None = None
    error: str | None = None
    load: int | None = None

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES


def _translate_outages(func):
    """Report Redis outages as QueueUnavailable, so callers need not know Redis."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise QueueUnavailable(f"the job queue is unavailable: {exc}") from exc

    return wrapper


@functools.cache
def _redis() -> redis.Redis:
    """One client (and connection pool) per process, shared by every queue."""
    return django_rq.get_connection(task_types()[0].name)


@functools.cache
def _queue(name: str):
    return django_rq.get_queue(name, connection=_redis(), commit_mode="auto")


@functools.cache
def _script(source: str):
    return _redis().register_script(source)


def _canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def job_id_for(task_type: TaskType, data: dict[str, Any]) -> str:
    """Same type and same validated input, same id: the basis of dedup and polling."""
    return f"{task_type.name}-{hashlib.sha256(_canonical(data).encode()).hexdigest()[:32]}"


@_translate_outages
def submit(*, task_type: TaskType, data: dict[str, Any], wait: float = 0) -> JobState:
    """Submit-or-poll: enqueue the job unless it is already queued, running or cached.

    With `wait`, hold up to that many seconds for the job to finish (a long poll).
    """
    state = _submit_once(task_type, data)
    return _wait_until_done(task_type, state, wait, lambda: _submit_once(task_type, data))


@_translate_outages
def get_status(*, job_id: str, wait: float = 0) -> JobState:
    """Poll a job by id; like a repeated submit, this keeps a queued job alive."""
    task_type = _task_type_of(job_id)
    state = _status_once(task_type, job_id)
    return _wait_until_done(task_type, state, wait, lambda: _status_once(task_type, job_id))


@_translate_outages
def cancel(*, job_id: str) -> None:
    """Cancel a queued job: it leaves the queue and its id is forgotten."""
    task_type = _task_type_of(job_id)
    job = _fetch(job_id)
    if job is None or _input_of(task_type, job_id, job.description or "") is None:
        raise JobNotFound(job_id)
    status = job.get_status(refresh=False).value
    if status != QUEUED:
        raise JobNotCancellable(status)
    job.cancel()
    job.delete(remove_from_queue=True)
    _redis().zrem(_pending_key(task_type), job_id)


@_translate_outages
def load(*, task_type: TaskType) -> int:
    """Live pending jobs of a type: queued and not expired, plus running."""
    queued, started = _counts(task_type)
    return queued + started


@_translate_outages
def queue_stats() -> list[dict[str, Any]]:
    """Per task type: queued, started, finished and failed jobs, and live workers."""
    stats = []
    for task_type in task_types():
        queue = _queue(task_type.name)
        queued, started, workers = _counts(task_type, with_workers=True)
        stats.append(
            {
                "name": task_type.name,
                "queued": queued,
                "started": started,
                "finished": FinishedJobRegistry(queue=queue).count,
                "failed": FailedJobRegistry(queue=queue).count,
                "workers": workers,
            }
        )
    return stats


def compute(*, task_type: TaskType, data: dict[str, Any]) -> JobState:
    """Sync mode: run the handler here and now, with no queue and no Redis."""
    try:
        result = run_task(task_type.name, data)
    except Exception as exc:  # a handler error is the job's failure, reported to the client
        return JobState(None, task_type.name, FAILED, data, error=f"{type(exc).__name__}: {exc}")
    return JobState(None, task_type.name, FINISHED, data, result=result)


@_translate_outages
def job_started(*, task_name: str, job_id: str) -> None:
    """Called by the worker as it starts a job: the job no longer waits in the queue."""
    _redis().zrem(PENDING_KEY.format(task_name), job_id)


@_translate_outages
def record_outcome(
    *,
    job_id: str,
    task_name: str,
    status: str,
    seconds: float,
    result: Any = None,
    exc_string: str | None = None,
    timeout: int | None = None,
) -> None:
    """Called by the worker after a job: cache what polls answer, count the run time.

    The histogram lives in Redis so that every worker, in any container, adds to the same one.
    """
    outcome = {"result": result} if status == FINISHED else {"error": _one_line_error(exc_string, timeout)}
    bucket = next((f"{bound}" for bound in DURATION_BUCKETS if seconds <= bound), "+Inf")
    _script(_RECORD_SCRIPT)(
        keys=[Job.key_for(job_id), DURATION_KEY.format(task_name)],
        args=[json.dumps(outcome), f"{status}:{bucket}", f"{status}:sum", seconds],
    )


@_translate_outages
def job_durations() -> dict[tuple[str, str], dict[str, float]]:
    """Per (task type, status): {bucket bound or "sum": value}, non-cumulative counts."""
    with _redis().pipeline(transaction=False) as pipe:
        for task_type in task_types():
            pipe.hgetall(DURATION_KEY.format(task_type.name))
        hashes = pipe.execute()
    durations: dict[tuple[str, str], dict[str, float]] = {}
    for task_type, fields in zip(task_types(), hashes, strict=True):
        for field, value in fields.items():
            status, _, bucket = field.decode().partition(":")
            durations.setdefault((task_type.name, status), {})[bucket] = float(value)
    return durations


def ping() -> None:
    """Raise QueueUnavailable unless Redis answers."""
    _translate_outages(_redis().ping)()


# --- internals -----------------------------------------------------------------------------


def _submit_once(task_type: TaskType, data: dict[str, Any]) -> JobState:
    job_id = job_id_for(task_type, data)
    for _attempt in range(5):
        snapshot = _poll(task_type, job_id)
        if snapshot is None:
            with contextlib.suppress(DuplicateJobError):  # if another request enqueued it first, poll that
                _enqueue(task_type, job_id, data)
            continue
        state = _state(task_type, job_id, snapshot, data)
        if state is not None:
            return state
    raise QueueUnavailable(f"job {job_id} kept changing under concurrent requests; try again")


def _status_once(task_type: TaskType, job_id: str) -> JobState:
    snapshot = _poll(task_type, job_id)
    data = _input_of(task_type, job_id, snapshot.description) if snapshot else None
    state = _state(task_type, job_id, snapshot, data) if data is not None else None
    if state is None:
        raise JobNotFound(job_id)
    return state


def _wait_until_done(task_type: TaskType, state: JobState, seconds: float, poll: Callable[[], JobState]) -> JobState:
    """Block on the job's RQ result stream (XREAD; every waiter wakes when the worker writes the
    result), never spinning on Redis. Re-polling at least every half JOB_TTL keeps a queued job
    alive while its client waits."""
    deadline = time.monotonic() + min(seconds, settings.MAX_WAIT)
    chunk = max(1.0, task_type.setting("job_ttl") / 2)
    last_seen = "0-0"
    while not state.done:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        block_ms = max(1, int(min(remaining, chunk) * 1000))
        streams = _blocking_redis().xread({Result.get_key(state.job_id): last_seen}, count=10, block=block_ms)
        if streams:
            last_seen = streams[0][1][-1][0]
        state = poll()
    return state


@functools.cache
def _blocking_redis() -> redis.Redis:
    """A client whose socket timeout outlasts the longest wait, for the blocking reads."""
    pool = _redis().connection_pool
    timeout = settings.MAX_WAIT + settings.REDIS_SOCKET_TIMEOUT
    kwargs = {**pool.connection_kwargs, "socket_timeout": timeout}
    blocking_pool = redis.ConnectionPool(
        connection_class=pool.connection_class, max_connections=pool.max_connections, **kwargs
    )
    return redis.Redis(connection_pool=blocking_pool)


def _pending_key(task_type: TaskType) -> str:
    return PENDING_KEY.format(task_type.name)


@dataclass(frozen=True)
class _Snapshot:
    status: str
    description: str
    outcome: str
    load: int


def _poll(task_type: TaskType, job_id: str) -> _Snapshot | None:
    keys = [Job.key_for(job_id), _pending_key(task_type), _started_key(task_type)]
    reply = _script(_POLL_SCRIPT)(keys=keys, args=[task_type.setting("job_ttl"), job_id])
    if reply is None:
        return None
    status, description, outcome, load = reply
    return _Snapshot(status.decode(), description.decode(), outcome.decode(), int(load))


def _started_key(task_type: TaskType) -> str:
    return StartedJobRegistry(task_type.name, connection=_redis()).key


def _counts(task_type: TaskType, with_workers: bool = False) -> tuple[int, ...]:
    load_script = _script(_LOAD_SCRIPT)
    keys = [_pending_key(task_type), _started_key(task_type)]
    if with_workers:
        keys.append(WORKERS_BY_QUEUE_KEY % task_type.name)
    return tuple(int(count) for count in load_script(keys=keys))


def _enqueue(task_type: TaskType, job_id: str, data: dict[str, Any]) -> None:
    # The deadline goes in first, so a worker that starts the job at once removes it for good.
    job_ttl = task_type.setting("job_ttl")
    redis_time, _ = _redis().time()
    _redis().zadd(_pending_key(task_type), {job_id: redis_time + job_ttl})
    _queue(task_type.name).enqueue(
        run_task,
        task_type.name,
        data,
        job_id=job_id,
        unique=True,
        ttl=job_ttl,
        result_ttl=task_type.setting("result_ttl"),
        failure_ttl=task_type.setting("failure_ttl"),
        job_timeout=task_type.setting("job_timeout"),
        description=f"{task_type.name} {_canonical(data)}",  # the input, readable by polls and the dashboard
    )


def _state(task_type: TaskType, job_id: str, snapshot: _Snapshot, data: dict[str, Any]) -> JobState | None:
    """The client's view of a job; None if it vanished or its result expired meanwhile."""
    result = error = None
    if snapshot.status in DONE_STATUSES:
        if snapshot.outcome:
            outcome = json.loads(snapshot.outcome)  # not orjson: it reads integers beyond 64 bits as floats
            result, error = outcome.get("result"), outcome.get("error")
        else:
            # Not cached by a worker (a job failed by RQ's abandoned-job cleanup, or polled in the
            # instant between RQ's write and the worker's): read RQ's own result.
            job = _fetch(job_id)
            latest = job.latest_result() if job is not None else None
            if latest is None:
                # The hash outlived its result (or vanished): drop it so the input can run again.
                if job is not None:
                    job.delete()
                return None
            if snapshot.status == FINISHED:
                result = latest.return_value
            else:
                error = _one_line_error(latest.exc_string, job.timeout)
    return JobState(job_id, task_type.name, snapshot.status, data, result, error, snapshot.load)


def _input_of(task_type: TaskType, job_id: str, description: str) -> dict[str, Any] | None:
    """The validated input a job was submitted with, if the job is really this type's job."""
    name, _, canonical = description.partition(" ")
    try:
        data = json.loads(canonical)
    except ValueError:
        return None
    if name != task_type.name or not isinstance(data, dict) or job_id_for(task_type, data) != job_id:
        return None
    return data


def _fetch(job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=_redis())
    except NoSuchJobError:
        return None


def _task_type_of(job_id: str) -> TaskType:
    match = _JOB_ID.match(job_id)
    if match is None:
        raise JobNotFound(job_id)
    try:
        return get_task_type(match["task"])
    except UnknownTaskType:
        raise JobNotFound(job_id) from None


def _one_line_error(exc_string: str | None, timeout: int | None) -> str:
    lines = [line for line in (exc_string or "").strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "the job failed"
    if "JobTimeoutException" in last:
        return f"timed out after {timeout} s" if timeout else "timed out"
    if "AbandonedJobError" in (exc_string or ""):
        return "abandoned: the worker running it died"
    # "package.module.ValueError: message" -> "ValueError: message"
    head, sep, message = last.partition(": ")
    return f"{head.rsplit('.', 1)[-1]}{sep}{message}" if sep else last
