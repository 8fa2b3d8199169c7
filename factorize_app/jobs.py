"""The job service: the one module that talks to RQ and Redis.

Ids, submit-or-poll, status, load, TTL refresh and cancel live here; the API and the
worker call these functions with plain values and get plain values back.

Load without scanning: RQ's queue list keeps the ids of expired jobs until a worker pops
them, so its length over-counts. Each task type therefore keeps a sorted set of its
queued job ids scored by expiry deadline (the same deadline as the job hash's EXPIRE,
both set by one script); live queued jobs are the members whose deadline lies ahead.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import multiprocessing.pool
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import django_rq
import hiredis
import redis
from django.conf import settings
from rq.exceptions import NoSuchJobError
from rq.job import Job, Retry
from rq.job import JobStatus as RQStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.utils import now as rq_now
from rq.utils import utcformat
from rq.worker import Worker, WorkerStatus
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from factorize_app.tasks import TaskType, UnknownTaskType, get_task_type, run_task, task_types

PENDING_KEY = "factorize:pending:{}"
THROTTLE_KEY = "factorize:throttle"
# Submits push a token here to wake an idle worker of the type (see wait_for_work).
WAKE_KEY = "factorize:wake:{}"
WAKE_TOKENS = 64
DURATION_KEY = "factorize:metrics:job_duration:{}"
# Upper bounds (seconds) of the job duration histogram's buckets.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Plain strings: RQ's JobStatus enum hashes by member name, so it does not mix with str in sets.
QUEUED, STARTED, FINISHED, FAILED = "queued", "started", "finished", "failed"
DONE_STATUSES = {FINISHED, FAILED, RQStatus.STOPPED.value, RQStatus.CANCELED.value}
_JOB_ID = re.compile(r"^(?P<task>[A-Za-z0-9_]+)-(?P<digest>[0-9a-f]{32})$")

# One round trip per poll of one job or a batch of them. First the client's rate-limit counter
# (KEYS[3], a fixed window; '' for none). Then, per job: refresh a queued job's TTL and its pending
# deadline together, atomically, so a job a worker has just started (and PERSISTed) is never
# given an expiry; answer its status, its input (kept in the description) and the outcome the
# worker cached as JSON. Last, the type's load (live queued + running).
_POLL_SCRIPT = """
if KEYS[3] ~= '' then
  local hits = redis.call('INCR', KEYS[3])
  if hits == 1 then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
  if hits > tonumber(ARGV[2]) then return {'throttled', redis.call('TTL', KEYS[3])} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local ttl = tonumber(ARGV[1])
local answers = {}
for i = 4, #ARGV do
  local key = 'rq:job:' .. ARGV[i]
  local fields = redis.call('HMGET', key, 'status', 'description', 'factorize_outcome')
  if fields[1] then
    if fields[1] == 'queued' then
      redis.call('EXPIRE', key, ttl)
      redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
    end
    answers[#answers + 1] = {fields[1], fields[2] or '', fields[3] or ''}
  else
    answers[#answers + 1] = false
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return {'ok', redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]), answers}
"""

# After jobs are enqueued in RQ's list: with a client name (fair order), also line them up in the
# client's own list, and put the client in the type's round-robin ring if it was not waiting
# already (a client is in the ring exactly while its list is not empty). Then wake a worker.
_AFTER_ENQUEUE_SCRIPT = """
local ring, client_list, wake, client = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
if client ~= '' then
  local before = redis.call('LLEN', client_list)
  for i = 3, #ARGV do
    local key = 'rq:job:' .. ARGV[i]
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'factorize_fair', '1')
      redis.call('RPUSH', client_list, ARGV[i])
    end
  end
  if before == 0 and redis.call('LLEN', client_list) > 0 then redis.call('RPUSH', ring, client) end
end
redis.call('LPUSH', wake, 1)
redis.call('LTRIM', wake, 0, tonumber(ARGV[2]) - 1)
return 1
"""

# A worker takes a batch from the first listed queue that has jobs: up to ARGV[1] of them, fewer
# to share a burst between the queue's registered workers. In FIFO order it pops RQ's list; in
# fair order (ARGV[6] == '1') it serves the type's clients in turn, one job each, from their own
# lists (removing the id from RQ's list too), and first any queued job at the head of RQ's list
# that waits in no client's list (RQ's own re-queues). Ids whose job is no longer queued
# (expired, cancelled, listed twice) are skipped. The rest start as RQ's worker starts them, each
# with an execution leased for ARGV[2] seconds in the StartedJobRegistry.
# Answers {queue name, {id, description, timeout, result_ttl, failure_ttl}...} or false.
_TAKE_SCRIPT = """
local count, lease, worker, stamp, execution_id = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local fair = ARGV[6] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local taken

local function start(name, id)
  local key = 'rq:job:' .. id
  local job = redis.call('HMGET', key, 'status', 'description', 'timeout', 'result_ttl', 'failure_ttl')
  if job[1] ~= 'queued' then return end
  local execution = id .. ':' .. execution_id
  local execution_key = 'rq:execution:' .. execution
  redis.call('HSET', key, 'status', 'started', 'started_at', stamp, 'last_heartbeat', stamp, 'worker_name', worker)
  redis.call('HDEL', key, 'factorize_fair')
  redis.call('PERSIST', key)
  redis.call('HSET', execution_key, 'job_id', id, 'created_at', now, 'last_heartbeat', now, 'worker_name', worker)
  redis.call('EXPIRE', execution_key, lease)
  redis.call('ZADD', 'rq:wip:' .. name, now + lease, execution)
  redis.call('ZREM', 'factorize:pending:' .. name, id)
  taken[#taken + 1] = {id, job[2] or '', job[3] or '', job[4] or '', job[5] or ''}
end

for i = 7, #ARGV do
  local name = ARGV[i]
  local queue_key = 'rq:queue:' .. name
  taken = {name}
  local waiting = redis.call('LLEN', queue_key)
  local want = math.min(count, math.ceil(waiting / math.max(redis.call('SCARD', 'rq:workers:' .. name), 1)))
  if fair then
    local ring = 'factorize:fair:' .. name .. ':ring'
    while #taken <= want do
      local head = redis.call('LINDEX', queue_key, 0)
      if not head then break end
      local fields = redis.call('HMGET', 'rq:job:' .. head, 'status', 'factorize_fair')
      local client = nil
      if fields[1] == 'queued' and fields[2] == '1' then client = redis.call('LPOP', ring) end
      if client then
        local client_list = 'factorize:fair:' .. name .. ':client:' .. client
        local id = redis.call('LPOP', client_list)
        if redis.call('LLEN', client_list) > 0 then redis.call('RPUSH', ring, client) end
        if id then
          redis.call('LREM', queue_key, 1, id)
          start(name, id)
        end
      else
        redis.call('LPOP', queue_key)
        start(name, head)
      end
    end
  else
    while #taken == 1 and redis.call('LLEN', queue_key) > 0 do
      for _, id in ipairs(redis.call('LPOP', queue_key, want)) do start(name, id) end
    end
  end
  if #taken > 1 then
    redis.call('HSET', KEYS[1], 'state', 'busy')
    return taken
  end
end
return false
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


class Throttled(Exception):
    """The client used up its request allowance for the current window."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many requests; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class RateLimit:
    """A client's allowance: `limit` requests per `window` seconds, counted under `scope`."""

    scope: str
    client: str
    limit: int
    window: int


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


_thread = threading.local()


def _run_script(source: str, keys: list[str], args: list[Any]) -> Any:
    """EVALSHA on a connection of this thread's own: the hot path's one round trip.

    redis-py's client wrapper (pool checkout and return, retries, instrumentation) costs more CPU
    than the round trip itself here (measured: 89 µs per call against 41 µs on a bare connection);
    a web thread keeps one connection and speaks to it directly. Any error drops the connection.
    """
    script = _script(source)
    for attempt in (1, 2):  # a connection broken since its last use (a Redis restart, a failover) is retried once
        connection = getattr(_thread, "connection", None)
        if connection is None:
            connection = _redis().connection_pool.make_connection()
            # Connect here: a Sentinel pool's connection asks the sentinels for the master in
            # connect(), which a first send_command would skip.
            connection.connect()
            _thread.connection = connection
        command = [hiredis.pack_command(("EVALSHA", script.sha, str(len(keys)), *keys, *map(str, args)))]
        try:
            try:
                connection.send_packed_command(command)
                return connection.read_response()
            except redis.exceptions.NoScriptError:  # a restarted or flushed Redis: load it again
                connection.send_command("SCRIPT", "LOAD", source)
                connection.read_response()
                connection.send_packed_command(command)
                return connection.read_response()
        except BaseException as exc:
            _thread.connection = None
            connection.disconnect()
            if attempt == 2 or not isinstance(exc, redis.exceptions.ConnectionError):
                raise
    raise AssertionError("unreachable")


def _canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def job_id_for(task_type: TaskType, data: dict[str, Any]) -> str:
    """Same type and same validated input, same id: the basis of dedup and polling."""
    return f"{task_type.name}-{hashlib.sha256(_canonical(data).encode()).hexdigest()[:32]}"


@_translate_outages
def submit(
    *,
    task_type: TaskType,
    data: dict[str, Any],
    wait: float = 0,
    client: str = "",
    rate_limit: RateLimit | None = None,
) -> JobState:
    """Submit-or-poll: enqueue the job unless it is already queued, running or cached.

    `client` names who asked, for fair order between clients. With `wait`, hold up to that many
    seconds for the job to finish (a long poll). With `rate_limit`, count this request against
    the client's allowance first (in the same round trip), raising Throttled when it is used up.
    """
    return submit_many(task_type=task_type, items=[data], wait=wait, client=client, rate_limit=rate_limit)[0]


@_translate_outages
def submit_many(
    *,
    task_type: TaskType,
    items: list[dict[str, Any]],
    wait: float = 0,
    client: str = "",
    rate_limit: RateLimit | None = None,
) -> list[JobState]:
    """Submit-or-poll many inputs of one type, in order, in a handful of round trips: one poll of
    them all, one transaction enqueueing the new ones, one poll again. With `wait`, hold until
    every one is done or the time is up."""
    states = _submit_batch(task_type, items, client, rate_limit)
    return _wait_until_done(task_type, states, wait, lambda: _submit_batch(task_type, items, client))


@_translate_outages
def get_status(*, job_id: str, wait: float = 0, rate_limit: RateLimit | None = None) -> JobState:
    """Poll a job by id; like a repeated submit, this keeps a queued job alive."""
    task_type = _task_type_of(job_id)
    state = _status_once(task_type, job_id, rate_limit)
    return _wait_until_done(task_type, [state], wait, lambda: [_status_once(task_type, job_id)])[0]


@_translate_outages
def count_request(*, rate_limit: RateLimit) -> None:
    """Count a request that touches no job against the client's allowance; raise Throttled."""
    _poll_many(task_types()[0], [], rate_limit)


def fair_order() -> bool:
    """Serve clients in turn (QUEUE_ORDER=fair) rather than first come, first served."""
    return settings.QUEUE_ORDER == "fair"


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
    """Sync mode: run the handler now, with no queue and no Redis, within the type's job timeout.

    Handlers run in a small pool of processes that keep their models loaded (a thread cannot be
    stopped; a process can): a job that overruns its timeout is failed, and the pool replaced.
    """
    pool = _sync_pool()
    timeout = task_type.setting("job_timeout")
    try:
        result = pool.apply_async(run_task, (task_type.name, data)).get(timeout)
    except multiprocessing.TimeoutError:
        _replace_sync_pool(pool)
        return JobState(None, task_type.name, FAILED, data, error=f"timed out after {timeout} s")
    except Exception as exc:  # a handler error is the job's failure, reported to the client
        return JobState(None, task_type.name, FAILED, data, error=f"{type(exc).__name__}: {exc}")
    return JobState(None, task_type.name, FINISHED, data, result=result)


_sync_lock = threading.Lock()
_sync_pools: list[multiprocessing.pool.Pool] = []


def _sync_pool() -> multiprocessing.pool.Pool:
    with _sync_lock:
        if not _sync_pools:
            context = multiprocessing.get_context("spawn")  # no fork of a threaded server
            pool = context.Pool(settings.SYNC_PROCESSES, initializer=_start_sync_process)
            atexit.register(pool.terminate)
            _sync_pools.append(pool)
        return _sync_pools[0]


def _replace_sync_pool(pool: multiprocessing.pool.Pool) -> None:
    with _sync_lock:
        if _sync_pools and _sync_pools[0] is pool:
            _sync_pools.clear()
    pool.terminate()  # stops the overrunning handler (and fails any other job it was running)


def _start_sync_process() -> None:
    import django

    django.setup()  # each type's setup() runs on its first job (run_task), then stays warm


# --- the worker's side: batches taken, run and recorded in a few round trips -----------------


@dataclass(frozen=True)
class TakenJob:
    """A job a worker has taken: it is STARTED in RQ's terms and leased to that worker."""

    job_id: str
    task_name: str
    input: dict[str, Any] | None  # None: not a job this service enqueued (no readable input)
    timeout: int
    result_ttl: int
    failure_ttl: int
    execution: str  # its member in RQ's StartedJobRegistry: "<job id>:<execution id>"


@dataclass(frozen=True)
class JobOutcome:
    job: TakenJob
    status: str  # FINISHED or FAILED
    seconds: float
    result: Any = None
    exc_string: str | None = None
    timed_out: bool = False


@_translate_outages
def take_jobs(*, queue_names: list[str], worker_name: str, count: int, lease: int) -> list[TakenJob]:
    """Take up to `count` queued jobs from the first of `queue_names` that has any, in one round trip.

    Each taken job is STARTED exactly as RQ's own worker leaves it (status, worker name, an
    execution in the StartedJobRegistry), so the dashboard and `rq info` see it running, and a
    worker that dies mid-batch leaves every unfinished job in the registry, whose lease expiry
    RQ's registry cleanup turns into a retry or an AbandonedJobError failure.
    """
    execution_id = uuid.uuid4().hex
    reply = _script(_TAKE_SCRIPT)(
        keys=[Worker.redis_worker_namespace_prefix + worker_name],
        args=[count, lease, worker_name, utcformat(rq_now()), execution_id, int(fair_order()), *queue_names],
    )
    if not reply:
        return []
    name, rows = reply[0].decode(), reply[1:]
    task_type = get_task_type(name)
    taken = []
    for job_id, description, timeout, result_ttl, failure_ttl in rows:
        job_id = job_id.decode()
        taken.append(
            TakenJob(
                job_id=job_id,
                task_name=name,
                input=_input_of(task_type, job_id, description.decode()),
                timeout=int(timeout or task_type.setting("job_timeout")),
                result_ttl=int(result_ttl or task_type.setting("result_ttl")),
                failure_ttl=int(failure_ttl or task_type.setting("failure_ttl")),
                execution=f"{job_id}:{execution_id}",
            )
        )
    return taken


@_translate_outages
def extend_lease(*, taken: list[TakenJob], lease: int) -> None:
    """Keep a running batch's jobs leased (the worker's heartbeat, while it works on them)."""
    if not taken:
        return
    deadline = time.time() + lease
    with _redis().pipeline(transaction=False) as pipe:
        for job in taken:
            pipe.zadd(_started_key_for(job.task_name), {job.execution: deadline}, xx=True)
            pipe.expire(_execution_key(job), lease)
        pipe.execute()


@_translate_outages
def finish_jobs(*, worker_name: str, outcomes: list[JobOutcome], unstarted: list[TakenJob] = ()) -> None:
    """Record a batch in one transaction: each outcome as RQ records it (status, result stream,
    finished/failed registry, TTLs, worker counters), the JSON that polls answer, the duration
    histogram; and hand `unstarted` jobs (a warm stop came mid-batch) back to the queue's front.
    """
    ended_at = utcformat(rq_now())
    histogram: dict[tuple[str, str], float] = {}
    working_time = 0.0
    counts = {FINISHED: 0, FAILED: 0}
    with _redis().pipeline(transaction=True) as pipe:
        for outcome in outcomes:
            job = outcome.job
            finished = outcome.status == FINISHED
            ttl = job.result_ttl if finished else job.failure_ttl
            if finished:
                cached = {"result": outcome.result}
            else:
                cached = {"error": describe_error(outcome.exc_string, job.timeout)}
            key = Job.key_for(job.job_id)
            fields = {"status": outcome.status, "ended_at": ended_at, "factorize_outcome": json.dumps(cached)}
            pipe.hset(key, mapping=fields)
            pipe.expire(key, ttl)
            entry = Result(
                job_id=job.job_id,
                type=Result.Type.SUCCESSFUL if finished else Result.Type.FAILED,
                connection=_redis(),
                return_value=outcome.result if finished else None,
                exc_string=None if finished else (outcome.exc_string or ""),
                worker_name=worker_name,
                execution_id=job.execution.rpartition(":")[2],
            )
            pipe.xadd(Result.get_key(job.job_id), entry.serialize(), maxlen=10)
            pipe.expire(Result.get_key(job.job_id), ttl)
            registry = FinishedJobRegistry if finished else FailedJobRegistry
            pipe.zadd(registry(job.task_name, connection=_redis()).key, {job.job_id: time.time() + ttl})
            _end_execution(pipe, job)
            counts[outcome.status] += 1
            working_time += outcome.seconds
            bucket = next((f"{bound}" for bound in DURATION_BUCKETS if outcome.seconds <= bound), "+Inf")
            for field, value in ((f"{outcome.status}:{bucket}", 1), (f"{outcome.status}:sum", outcome.seconds)):
                histogram[(job.task_name, field)] = histogram.get((job.task_name, field), 0) + value
        for job in reversed(unstarted):
            _end_execution(pipe, job)
            task_type = get_task_type(job.task_name)
            key = Job.key_for(job.job_id)
            pipe.hset(key, mapping={"status": QUEUED, "worker_name": ""})
            pipe.expire(key, task_type.setting("job_ttl"))
            pipe.zadd(_pending_key(task_type), {job.job_id: time.time() + task_type.setting("job_ttl")})
            pipe.lpush(_queue(job.task_name).key, job.job_id)
        worker_key = Worker.redis_worker_namespace_prefix + worker_name
        pipe.hset(worker_key, "state", WorkerStatus.IDLE.value)
        for (task_name, field), value in histogram.items():
            pipe.hincrbyfloat(DURATION_KEY.format(task_name), field, value)
        pipe.hincrby(worker_key, "successful_job_count", counts[FINISHED])
        pipe.hincrby(worker_key, "failed_job_count", counts[FAILED])
        pipe.hincrbyfloat(worker_key, "total_working_time", working_time)
        pipe.execute()


@_translate_outages
def wait_for_work(*, queue_names: list[str], timeout: float) -> None:
    """Block until a submit signals new work on one of the queues, or `timeout` passes.

    Workers take jobs with a script, which cannot block; submits push a wake-up token instead.
    Jobs that reach a queue some other way (RQ's retries, the dashboard) are found at the latest
    when the timeout runs out.
    """
    _blocking_redis().blpop([WAKE_KEY.format(name) for name in queue_names], timeout=timeout)


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


def _submit_batch(
    task_type: TaskType, items: list[dict[str, Any]], client: str, rate_limit: RateLimit | None = None
) -> list[JobState]:
    ids = [job_id_for(task_type, data) for data in items]
    inputs = dict(zip(ids, items, strict=True))
    states: dict[str, JobState] = {}
    for _attempt in range(5):
        waiting = [job_id for job_id in inputs if job_id not in states]
        load, snapshots = _poll_many(task_type, waiting, rate_limit)
        rate_limit = None  # counted once
        missing = []
        for job_id, snapshot in zip(waiting, snapshots, strict=True):
            state = _state(task_type, job_id, snapshot, inputs[job_id], load) if snapshot else None
            if state is None:
                missing.append(job_id)
            else:
                states[job_id] = state
        if not missing:  # every answer carries the latest load
            return [
                states[job_id] if states[job_id].load == load else dataclasses.replace(states[job_id], load=load)
                for job_id in ids
            ]
        _enqueue(task_type, {job_id: inputs[job_id] for job_id in missing}, client)
    raise QueueUnavailable(f"{len(missing)} jobs kept changing under concurrent requests; try again")


def _status_once(task_type: TaskType, job_id: str, rate_limit: RateLimit | None = None) -> JobState:
    load, (snapshot,) = _poll_many(task_type, [job_id], rate_limit)
    data = _input_of(task_type, job_id, snapshot.description) if snapshot else None
    state = _state(task_type, job_id, snapshot, data, load) if data is not None else None
    if state is None:
        raise JobNotFound(job_id)
    return state


def _wait_until_done(
    task_type: TaskType, states: list[JobState], seconds: float, poll: Callable[[], list[JobState]]
) -> list[JobState]:
    """Block on the jobs' RQ result streams (XREAD; every waiter wakes when a worker writes a
    result), never spinning on Redis; then poll again. Re-polling at least every half JOB_TTL
    keeps queued jobs alive while their client waits."""
    deadline = time.monotonic() + min(seconds, settings.MAX_WAIT)
    chunk = max(1.0, task_type.setting("job_ttl") / 2)
    seen: dict[str, str] = {}
    while not all(state.done for state in states):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        streams = {Result.get_key(s.job_id): seen.get(s.job_id, "0-0") for s in states if not s.done}
        block_ms = max(1, int(min(remaining, chunk) * 1000))
        for stream, entries in _blocking_redis().xread(streams, count=10, block=block_ms) or []:
            seen[stream.decode().removeprefix(Result.get_key(""))] = entries[-1][0]
        states = poll()
    return states


@functools.cache
def _blocking_redis() -> redis.Redis:
    """A client whose socket timeout outlasts the longest wait, for the blocking reads."""
    client = _redis()
    pool = client.connection_pool
    timeout = settings.MAX_WAIT + settings.REDIS_SOCKET_TIMEOUT
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        # A Sentinel pool of its own, asking the same sentinels for the master on every connect, so
        # blocking reads follow a failover too (a copy of the kwargs would tie its connections to
        # the first pool's master lookup, which drops only that pool's idle connections on a move).
        return pool.sentinel_manager.master_for(
            pool.service_name, redis_class=type(client), socket_timeout=timeout, max_connections=pool.max_connections
        )
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


def _poll_many(
    task_type: TaskType, job_ids: list[str], rate_limit: RateLimit | None = None
) -> tuple[int, list[_Snapshot | None]]:
    """The type's load and a snapshot of each job (None: no such job), in one round trip."""
    throttle_key, limit, window = "", 0, 0
    if rate_limit is not None:
        slot = int(time.time() // rate_limit.window)
        throttle_key = f"{THROTTLE_KEY}:{rate_limit.scope}:{rate_limit.client}:{slot}"
        limit, window = rate_limit.limit, rate_limit.window
    keys = [_pending_key(task_type), _started_key(task_type), throttle_key]
    reply = _run_script(_POLL_SCRIPT, keys, [task_type.setting("job_ttl"), limit, window, *job_ids])
    if reply[0] == b"throttled":
        raise Throttled(max(1, int(reply[1])))
    _, load, answers = reply
    snapshots = [_Snapshot(*(field.decode() for field in answer)) if answer else None for answer in answers]
    return int(load), snapshots


def _started_key(task_type: TaskType) -> str:
    return _started_key_for(task_type.name)


def _started_key_for(task_name: str) -> str:
    return StartedJobRegistry(task_name, connection=_redis()).key


def _execution_key(job: TakenJob) -> str:
    return f"rq:execution:{job.execution}"


def _end_execution(pipe: redis.client.Pipeline, job: TakenJob) -> None:
    pipe.zrem(_started_key_for(job.task_name), job.execution)
    pipe.delete(_execution_key(job))


def _counts(task_type: TaskType, with_workers: bool = False) -> tuple[int, ...]:
    load_script = _script(_LOAD_SCRIPT)
    keys = [_pending_key(task_type), _started_key(task_type)]
    if with_workers:
        keys.append(WORKERS_BY_QUEUE_KEY % task_type.name)
    return tuple(int(count) for count in load_script(keys=keys))


def _enqueue(task_type: TaskType, new_jobs: dict[str, dict[str, Any]], client: str) -> None:
    """Enqueue jobs found missing, in one transaction that fails if any of them appeared
    meanwhile (another request enqueued it: the caller polls again and sees it)."""
    job_ttl = task_type.setting("job_ttl")
    queue = _queue(task_type.name)
    keys = [Job.key_for(job_id) for job_id in new_jobs]
    with _redis().pipeline(transaction=True) as pipe:
        try:
            pipe.watch(*keys)
            if pipe.exists(*keys):
                return
            redis_time, _ = pipe.time()
            pipe.multi()
            # Deadlines first, so a worker that starts a job at once removes its deadline for good.
            pipe.zadd(_pending_key(task_type), {job_id: redis_time + job_ttl for job_id in new_jobs})
            for job_id, data in new_jobs.items():
                queue.enqueue(
                    run_task,
                    task_type.name,
                    data,
                    job_id=job_id,
                    ttl=job_ttl,
                    result_ttl=task_type.setting("result_ttl"),
                    failure_ttl=task_type.setting("failure_ttl"),
                    job_timeout=task_type.setting("job_timeout"),
                    description=f"{task_type.name} {_canonical(data)}",  # the input, for polls and the dashboard
                    # RQ re-queues a job whose worker died (its lease expired) while retries are
                    # left; a handler's own exception is the job's answer and is not retried.
                    retry=Retry(max=settings.JOB_MAX_RETRIES) if settings.JOB_MAX_RETRIES > 0 else None,
                    pipeline=pipe,
                )
            fair_client = (client or "anonymous") if fair_order() else ""
            _script(_AFTER_ENQUEUE_SCRIPT)(
                keys=[_ring_key(task_type), _client_key(task_type, fair_client), WAKE_KEY.format(task_type.name)],
                args=[fair_client, WAKE_TOKENS, *new_jobs],
                client=pipe,
            )
            pipe.execute()
        except redis.exceptions.WatchError:
            return


def _ring_key(task_type: TaskType) -> str:
    return f"factorize:fair:{task_type.name}:ring"


def _client_key(task_type: TaskType, client: str) -> str:
    return f"factorize:fair:{task_type.name}:client:{client}"


def _state(
    task_type: TaskType, job_id: str, snapshot: _Snapshot, data: dict[str, Any], load: int
) -> JobState | None:
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
                error = describe_error(latest.exc_string, job.timeout)
    return JobState(job_id, task_type.name, snapshot.status, data, result, error, load)


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


def describe_error(exc_string: str | None, timeout: int | None) -> str:
    """A failure in one line for clients and logs, from RQ's traceback string."""
    lines = [line for line in (exc_string or "").strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "the job failed"
    if "JobTimeoutException" in last:
        return f"timed out after {timeout} s" if timeout else "timed out"
    if "AbandonedJobError" in (exc_string or ""):
        attempts = settings.JOB_MAX_RETRIES + 1
        return f"abandoned: the worker running it died ({attempts} attempt{'s' if attempts > 1 else ''})"
    # "package.module.ValueError: message" -> "ValueError: message"
    head, sep, message = last.partition(": ")
    return f"{head.rsplit('.', 1)[-1]}{sep}{message}" if sep else last
