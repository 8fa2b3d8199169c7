"""The job service: the one module that talks to RQ and Redis.

Ids, submit-or-poll, status, load, TTL refresh and cancel live here; the API and the
worker call these functions with plain values and get plain values back.

Load without scanning: RQ's queue list keeps the ids of expired jobs until a worker pops
them, so its length over-counts. Each task type therefore keeps a sorted set of its
queued job ids scored by expiry deadline (the same deadline as the job hash's EXPIRE,
both set by one script); live queued jobs are the members whose deadline lies ahead.

Write refusals: a Redis that is full (`noeviction` at `maxmemory`), a read-only replica or one
whose persistence failed (MISCONF) still answers reads. Its refusals become QueueRefusesWrites
(a QueueUnavailable naming the reason, see `write_refusal`); polls keep answering because the
poll script's writes (TTL refresh, rate-limit counter) are allowed to fail. New submits are
refused early, once Redis memory passes REDIS_MEMORY_HIGH_WATER of maxmemory (`admit_new_jobs`),
so that the results of jobs already running always have room to be recorded.

Outages do not expire the queue: Redis expires a queued job JOB_TTL after its last poll by the
wall clock, so an outage longer than that (clients cannot poll) would empty the queue. Every
script that serves the queue (polls, takes, the workers' sweep) ticks a clock in Redis; a tick
that finds the clock older than OUTAGE_GAP seconds records the gap as an outage. Each queued
job's input is kept (without expiry) in a per-type hash until a worker takes it; the workers'
sweep (`sweep_queue`) re-enqueues the jobs that expired during a recorded outage, with a fresh
JOB_TTL, and forgets the inputs of jobs that expired while the queue was looked after.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import datetime
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
from rq.utils import utcformat, utcparse
from rq.worker import Worker, WorkerStatus
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from factorize_app.tasks import TaskType, UnknownTaskType, get_task_type, run_task, task_types

PENDING_KEY = "factorize:pending:{}"
THROTTLE_KEY = "factorize:throttle"
# Submits push a token here to wake an idle worker of the type (see wait_for_work).
WAKE_KEY = "factorize:wake:{}"
WAKE_TOKENS = 64
DURATION_KEY = "factorize:metrics:job_duration:{}"
# Inputs of queued jobs (id -> "<fair client> <description>"), kept without expiry (outage recovery).
QUEUED_INPUTS_KEY = "factorize:queued:{}"
# Redis time of the last script that served the queue, and the outages ("<start> <end>") found.
CLOCK_KEY = "factorize:clock"
OUTAGES_KEY = "factorize:outages"
# A clock older than this many seconds means nothing could reach Redis (or nothing ran): an outage.
OUTAGE_GAP = 5
# Reasons Redis refuses writes while still answering reads.
FULL, READ_ONLY, PERSISTENCE = "full", "read-only", "persistence"
REFUSAL_DETAILS = {
    FULL: "the job queue is full; try again later",
    READ_ONLY: "the job queue is read-only (its Redis is a replica, as during a failover); try again later",
    PERSISTENCE: "the job queue cannot save to disk, so it refuses changes; try again later",
}
# Upper bounds (seconds) of the job duration histogram's buckets.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Plain strings: RQ's JobStatus enum hashes by member name, so it does not mix with str in sets.
QUEUED, STARTED, FINISHED, FAILED = "queued", "started", "finished", "failed"
DONE_STATUSES = {FINISHED, FAILED, RQStatus.STOPPED.value, RQStatus.CANCELED.value}
_JOB_ID = re.compile(r"^(?P<task>[A-Za-z0-9_]+)-(?P<digest>[0-9a-f]{32})$")

# Every script that serves the queue starts with this: tick the queue's clock (Redis time), and
# record an outage when the clock is older than OUTAGE_GAP (see the module docstring). A Redis
# refusing writes refuses the tick too; the script carries on (pcall).
_CLOCK_TICK = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local last = tonumber(redis.call('GET', 'factorize:clock') or '')
if last and now - last > {OUTAGE_GAP} then redis.pcall('RPUSH', 'factorize:outages', last .. ' ' .. now) end
redis.pcall('SET', 'factorize:clock', tostring(now))
"""

# One round trip per poll of one job or a batch of them. First the client's rate-limit counter
# (KEYS[3], a fixed window; '' for none). Then, per job: refresh a queued job's TTL and its pending
# deadline together, atomically, so a job a worker has just started (and PERSISTed) is never
# given an expiry; answer its status, its input (kept in the description) and the outcome the
# worker cached as JSON. Last, the type's load (live queued + running). Every write may be refused
# (a full or read-only Redis): the poll still answers; the rate limit then fails open.
_POLL_SCRIPT = _CLOCK_TICK + """
if KEYS[3] ~= '' then
  local hits = redis.pcall('INCR', KEYS[3])
  if type(hits) == 'number' then
    if hits == 1 then redis.pcall('EXPIRE', KEYS[3], ARGV[3]) end
    if hits > tonumber(ARGV[2]) then return {'throttled', redis.call('TTL', KEYS[3])} end
  end
end
local ttl = tonumber(ARGV[1])
local answers = {}
for i = 4, #ARGV do
  local key = 'rq:job:' .. ARGV[i]
  local fields = redis.call('HMGET', key, 'status', 'description', 'factorize_outcome')
  if fields[1] then
    if fields[1] == 'queued' then
      redis.pcall('EXPIRE', key, ttl)
      redis.pcall('ZADD', KEYS[1], now + ttl, ARGV[i])
    end
    answers[#answers + 1] = {fields[1], fields[2] or '', fields[3] or ''}
  else
    answers[#answers + 1] = false
  end
end
return {'ok', redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') + redis.call('ZCARD', KEYS[2]), answers}
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
_TAKE_SCRIPT = _CLOCK_TICK + """
local count, lease, worker, stamp, execution_id = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local fair = ARGV[6] == '1'
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
  redis.call('HDEL', 'factorize:queued:' .. name, id)
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

# Live pending = queued jobs whose deadline is ahead + running jobs. With a third key (the queue's
# worker set), also each registered worker's last heartbeat (RQ's timestamp; '' if none) and Redis
# time, for the caller to count the workers that beat lately. Read-only: it answers on a full Redis.
_LOAD_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local counts = {redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'), redis.call('ZCARD', KEYS[2])}
if KEYS[3] then
  local beats = {}
  for _, worker_key in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    local fields = redis.call('HMGET', worker_key, 'last_heartbeat', 'death')
    if fields[1] and not fields[2] then beats[#beats + 1] = fields[1] end
  end
  counts[3] = t[1]
  counts[4] = beats
end
return counts
"""

# The workers' sweep of one task type's queued jobs (after the clock tick): ARGV[1], ARGV[2] bound
# the outage to recover, if any ('' for none). Jobs whose deadline passed are looked at (at most
# ARGV[4] per call): one whose hash expired during the outage (its deadline after the outage's
# start) is answered with its stored input, for the caller to enqueue again; the input and
# deadline of any other expired job (gone, or no longer queued) are forgotten, and a job still
# queued gets the deadline of its hash's TTL. ARGV[3] is JOB_TTL.
_SWEEP_SCRIPT = _CLOCK_TICK + """
local pending, inputs = KEYS[1], KEYS[2]
local outage_start = tonumber(ARGV[1])
local restore = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', pending, '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[4]))) do
  restore[#restore + 1] = id
end
local answer = {}
for i = 1, #restore, 2 do
  local id, deadline = restore[i], tonumber(restore[i + 1])
  local key = 'rq:job:' .. id
  local status = redis.call('HGET', key, 'status')
  if status == 'queued' then
    local ttl = redis.call('TTL', key)
    if ttl < 0 then ttl = tonumber(ARGV[3]) end
    redis.call('ZADD', pending, now + ttl, id)
  elseif not status and outage_start and deadline > outage_start and redis.call('HEXISTS', inputs, id) == 1 then
    answer[#answer + 1] = {id, redis.call('HGET', inputs, id)}
    redis.call('ZADD', pending, now + tonumber(ARGV[3]), id)
  else
    redis.call('ZREM', pending, id)
    redis.call('HDEL', inputs, id)
  end
end
return answer
"""


class QueueUnavailable(Exception):
    """Redis did not answer; the caller should report an outage, not a bug."""


class QueueRefusesWrites(QueueUnavailable):
    """Redis answers but refuses writes: `reason` is FULL, READ_ONLY or PERSISTENCE."""

    def __init__(self, reason: str, cause: str = ""):
        super().__init__(REFUSAL_DETAILS[reason] + (f" ({cause})" if cause else ""))
        self.reason = reason
        self.detail = REFUSAL_DETAILS[reason]


class SubmitRefused(QueueRefusesWrites):
    """A submit of new jobs refused: by Redis itself, or by the high-water mark of its memory."""


def write_refusal(exc: BaseException) -> str | None:
    """The reason a Redis error refuses a write (FULL, READ_ONLY, PERSISTENCE), or None.

    redis-py raises OOM and READONLY replies (also from inside a transaction, whose first error
    it raises instead of EXECABORT, and from a script) as their own classes; MISCONF arrives as a
    plain ResponseError whose text names it.
    """
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return FULL
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return READ_ONLY
    if isinstance(exc, redis.exceptions.ResponseError):
        text = str(exc)
        if "MISCONF" in text:
            return PERSISTENCE
        if "OOM command not allowed" in text:
            return FULL
        if "READONLY" in text or "master -> replica" in text:
            # The second: a blocking read (BLPOP, XREAD) that Redis ends as it turns into a replica.
            return READ_ONLY
    return None


def queue_error(exc: BaseException) -> QueueUnavailable | None:
    """The job service's view of a Redis error: an outage, a write refusal, or None (a bug)."""
    if isinstance(exc, QueueUnavailable):
        return exc
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return QueueUnavailable(f"the job queue is unavailable: {exc}")
    reason = write_refusal(exc)
    return QueueRefusesWrites(reason, str(exc)) if reason else None


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
        except QueueUnavailable:
            raise
        except redis.exceptions.RedisError as exc:
            translated = queue_error(exc)
            if translated is None:
                raise
            raise translated from exc

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
    every one is done or the time is up. New jobs are refused (SubmitRefused) when Redis refuses
    writes or its memory is past the high-water mark; inputs already queued or done still answer."""
    try:
        states = _submit_batch(task_type, items, client, rate_limit)
        return _wait_until_done(task_type, states, wait, lambda: _submit_batch(task_type, items, client))
    except SubmitRefused:
        raise
    except redis.exceptions.RedisError as exc:
        reason = write_refusal(exc)
        if reason is None:
            raise
        raise SubmitRefused(reason, str(exc)) from exc


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
    with _redis().pipeline(transaction=False) as pipe:
        pipe.zrem(_pending_key(task_type), job_id)
        pipe.hdel(_queued_inputs_key(task_type), job_id)
        pipe.execute()


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
    keys = [key for job in taken for key in (_started_key_for(job.task_name), _execution_key(job))]
    _script(_EXTEND_LEASE_SCRIPT)(keys=keys, args=[lease, *(job.execution for job in taken)])


# Renew leases: per job, the execution's EXPIRE, then its deadline in the StartedJobRegistry. A
# full Redis refuses a script's memory-growing command only before the script's first write, and
# EXPIRE is not one: so a lease (which grows nothing) is renewed on a full Redis too, and a job
# whose results wait for room to be recorded is not taken for abandoned meanwhile.
_EXTEND_LEASE_SCRIPT = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('EXPIRE', KEYS[2 * i - 2], ARGV[1])
  redis.call('ZADD', KEYS[2 * i - 3], 'XX', deadline, ARGV[i])
end
return 1
"""


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
            if job.input is not None:
                pipe.hset(_queued_inputs_key(task_type), job.job_id, _queued_input(task_type, job.input, ""))
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


PROBE_KEY = "factorize:probe"
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


@_translate_outages
def _probe_once() -> str | None:
    try:
        _redis().set(PROBE_KEY, "1", px=60_000)  # a write: refused exactly when submits would be
    except redis.exceptions.ResponseError as exc:
        reason = write_refusal(exc)
        if reason is None:
            raise
        return reason
    return None if _memory_admits() else FULL


_memory_lock = threading.Lock()
_memory_seen: tuple[float, int, int] | None = None  # (monotonic time read, used_memory, maxmemory)


@_translate_outages
def redis_memory() -> tuple[int, int]:
    """Redis's used_memory and maxmemory (0: unlimited), read from INFO memory at most once a
    second per process: admission asks on every submit."""
    global _memory_seen
    seen = _memory_seen
    if seen is None or time.monotonic() - seen[0] >= 1.0:
        # One thread reads; the others keep the last reading meanwhile (or wait for the first).
        if _memory_lock.acquire(blocking=seen is None):
            try:
                info = _redis().info("memory")
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


@_translate_outages
def sweep_queue(*, limit: int = 1000) -> int:
    """The workers' maintenance of queued jobs (see the module docstring): re-enqueue the jobs that
    expired during outages, forget those that expired unpolled. Answers how many came back."""
    conn = _redis()
    _script(_CLOCK_TICK + "return 1")(keys=[CLOCK_KEY])  # records an outage that ends now, if any
    outages = conn.lrange(OUTAGES_KEY, 0, -1)
    outage_start = min((float(entry.split()[0]) for entry in outages), default=None)
    restored = 0
    for task_type in task_types():
        args = ["" if outage_start is None else outage_start, "", task_type.setting("job_ttl"), limit]
        lost = _script(_SWEEP_SCRIPT)(keys=[_pending_key(task_type), _queued_inputs_key(task_type)], args=args)
        by_client: dict[str, dict[str, dict[str, Any]]] = {}
        for job_id, stored in lost:
            client, _, canonical = stored.decode().partition(" ")
            data = _input_of(task_type, job_id.decode(), f"{task_type.name} {canonical}")
            if data is not None:
                by_client.setdefault(client, {})[job_id.decode()] = data
        for client, new_jobs in by_client.items():
            _enqueue(task_type, new_jobs, client)
            restored += len(new_jobs)
    if outages:
        conn.ltrim(OUTAGES_KEY, len(outages), -1)
    return restored


@_translate_outages
def clean_stale_workers() -> list[str]:
    """Unregister workers that stopped heartbeating (killed, lost with their node) more than
    WORKER_LIVENESS ago, so RQ's and the dashboard's listings show live workers only. Their jobs
    are recovered by RQ's registry cleanup when their lease runs out. Answers their names."""
    conn = _redis()
    keys = [key.decode() for key in conn.smembers(REDIS_WORKER_KEYS)]
    if not keys:
        return []
    now = int(conn.time()[0])
    with conn.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, "last_heartbeat", "death", "queues")
        rows = pipe.execute()
    stale = [
        (key, queues)
        for key, (beat, death, queues) in zip(keys, rows, strict=True)
        if death is None and (beat is None or not _beat_is_recent(beat, now))
    ]
    with conn.pipeline(transaction=True) as pipe:
        for key, queues in stale:
            pipe.delete(key)
            pipe.srem(REDIS_WORKER_KEYS, key)
            for name in (queues or b"").decode().split(","):
                if name:
                    pipe.srem(WORKERS_BY_QUEUE_KEY % name, key)
        pipe.execute()
    return [key.removeprefix(Worker.redis_worker_namespace_prefix) for key, _ in stale]


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
        admit_new_jobs()
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
    reply = load_script(keys=keys)
    counts = (int(reply[0]), int(reply[1]))
    if with_workers:
        now, beats = int(reply[2]), reply[3]
        counts += (sum(_beat_is_recent(beat, now) for beat in beats),)
    return counts


def _beat_is_recent(last_heartbeat: bytes, now: float) -> bool:
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
            pipe.hset(
                _queued_inputs_key(task_type),
                mapping={job_id: _queued_input(task_type, data, client) for job_id, data in new_jobs.items()},
            )
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


def _queued_inputs_key(task_type: TaskType) -> str:
    return QUEUED_INPUTS_KEY.format(task_type.name)


def _queued_input(task_type: TaskType, data: dict[str, Any], client: str) -> str:
    """What re-enqueues a job lost in an outage: its client (no spaces) and its input."""
    return f"{client.replace(' ', '_')} {_canonical(data)}"


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
