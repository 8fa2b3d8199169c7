"""A job's status as the web reads it: the poll of one job or many, and the long poll.

A poll is one script (`poll.lua`: status, input and cached outcome of each job, the type's load,
the client's rate-limit counter); polling a queued job keeps it alive (its TTL and its pending
deadline are refreshed together). Load without scanning: RQ's queue list keeps the ids of
expired jobs until a worker pops them, so its length over-counts; each task type therefore keeps
a sorted set of its queued job ids scored by expiry deadline (the same deadline as the job
hash's EXPIRE), and live queued jobs are the members whose deadline lies ahead. A long poll
blocks on the jobs' RQ result streams, never spinning on Redis, with its next poll sent behind the
blocking read in the same write: Redis runs it the moment the read returns, so a wake-up costs no
round trip more.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from rq.exceptions import NoSuchJobError
from rq.job import Job

from factorize_app.jobs import events, keys, scripts
from factorize_app.jobs.connection import (
    HOME,
    blocking_connection,
    redis_for_job,
    run_scripts,
    script,
    server_of,
    types_on,
)
from factorize_app.jobs.errors import JobNotFound, Throttled, translate_outages
from factorize_app.jobs.ids import input_of, task_type_of
from factorize_app.jobs.release import released, wake_key
from factorize_app.jobs.states import (
    ABORTED_ERROR,
    DONE_STATUSES,
    FINISHED,
    STARTED,
    JobState,
    RateLimit,
    describe_error,
    fair_order,
)
from factorize_app.tasks import TaskType, task_types

_ABORTED_OUTCOME = json.dumps({"error": ABORTED_ERROR})


@translate_outages
def get_status(
    *, job_id: str, wait: float = 0, rate_limit: RateLimit | None = None, owner: str = ""
) -> JobState:
    """Poll a job by id; like a repeated submit, this keeps a queued job alive. With `owner`, a
    job that client does not own is JobNotFound (its id tells nothing)."""
    task_type = task_type_of(job_id)
    state = _status_once(task_type, job_id, rate_limit, owner)
    return wait_until_done(
        task_type, [state], wait, lambda read: [_status_once(task_type, job_id, owner=owner, read=read)]
    )[0]


@translate_outages
def count_request(*, rate_limit: RateLimit) -> None:
    """Count a request that touches no job against the client's allowance (its `cost`); raise Throttled."""
    poll_many((types_on(HOME) or task_types())[0], [], rate_limit)


@translate_outages
def open_status(*, job_id: str, rate_limit: RateLimit | None = None, owner: str = "") -> tuple[JobState, str | None]:
    """An event stream's first look at a job (api/streams.py), in one round trip: its state as
    `get_status` answers it, and the id of its stream's newest event (None: none), the stream
    opened first (jobs/events.py), so that every change after that state is appended after that id."""
    task_type = task_type_of(job_id)
    state, snapshot = _look(task_type, job_id, rate_limit, owner, open_events=True)
    return state, snapshot.event_id or None


def owners_ttl(task_type: TaskType) -> int:
    """A job's owners outlive it: its wait, its run and its kept outcome."""
    kept = max(task_type.setting("result_ttl"), task_type.setting("failure_ttl"))
    return task_type.setting("job_ttl") + task_type.setting("job_timeout") + kept


def _status_once(
    task_type: TaskType,
    job_id: str,
    rate_limit: RateLimit | None = None,
    owner: str = "",
    read: BlockingRead | None = None,
) -> JobState:
    return _look(task_type, job_id, rate_limit, owner, read=read)[0]


def _look(
    task_type: TaskType,
    job_id: str,
    rate_limit: RateLimit | None,
    owner: str,
    *,
    open_events: bool = False,
    read: BlockingRead | None = None,
) -> tuple[JobState, Snapshot]:
    load, (snapshot,), _ = poll_many(task_type, [job_id], rate_limit, check=owner, open_events=open_events, read=read)
    data = input_of(task_type, job_id, snapshot.description) if snapshot else None
    state = state_of(task_type, job_id, snapshot, data, load) if data is not None else None
    if state is None:
        raise JobNotFound(job_id)
    return state, snapshot


@dataclass
class BlockingRead:
    """A blocking XREAD (COUNT 10) of `streams` (name -> the id to read after) for up to `block_ms`,
    sent by `poll_many` ahead of its poll in one write; `reply` is what it read ([]: nothing)."""

    streams: dict[str, str]
    block_ms: int
    reply: list = field(default_factory=list)


def wait_until_done(
    task_type: TaskType, states: list[JobState], seconds: float, poll: Callable[[BlockingRead], list[JobState]]
) -> list[JobState]:
    """Block on the jobs' RQ result streams (XREAD; every waiter wakes when a worker writes a
    result), never spinning on Redis; then poll again: `poll(read)` polls through `poll_many`
    with `read`, which sends the blocking read ahead of the poll (one round trip). Re-polling at
    least every half JOB_TTL keeps queued jobs alive while their client waits. The process's
    wake-up stream is read too: a stopping server ends every wait at once (`release`)."""
    deadline = time.monotonic() + min(seconds, settings.MAX_WAIT)
    chunk = max(1.0, task_type.setting("job_ttl") / 2)
    seen: dict[str, str] = {}
    while not all(state.done for state in states) and not released():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        streams = {keys.results(s.job_id): seen.get(s.job_id, "0-0") for s in states if not s.done}
        streams[wake_key()] = "0-0"
        read = BlockingRead(streams, max(1, int(min(remaining, chunk) * 1000)))
        states = poll(read)
        for stream, entries in read.reply:
            seen[stream.decode().removeprefix(keys.RESULTS_PREFIX)] = entries[-1][0]
    return states


@dataclass(frozen=True)
class Snapshot:
    """A job as one poll found it."""

    status: str
    description: str
    outcome: str
    progress: str  # JSON the worker wrote while the job runs, or ""
    output: str = ""  # a streaming job's pieces so far, a JSON array, or ""
    event_id: str = ""  # with `open_events`: its stream's newest entry's id, or ""


def poll_many(
    task_type: TaskType,
    job_ids: list[str],
    rate_limit: RateLimit | None = None,
    *,
    claim: str = "",
    check: str = "",
    claim_after: int | None = None,
    open_events: bool = False,
    read: BlockingRead | None = None,
) -> tuple[int, list[Snapshot | None], int]:
    """The type's load and a snapshot of each job (None: no such job, or, with `check`, not that
    client's), in one round trip; `claim` makes a client an owner of each job that exists, with its
    own deadline (`claim_after` seconds from now; None: none) and, in fair order, its own turn.
    Third, when a job is missing, the claiming client's queued jobs in fair order (-1: not counted).
    `open_events` opens the event stream of each job found first, its newest id in its snapshot;
    `read`, a blocking read to wait on first (wait_until_done), sent ahead of the poll."""
    values = poll_values(task_type, job_ids, rate_limit, claim, check, claim_after, open_events=open_events)
    server = server_of(task_type.name)
    if server == HOME or not values["throttle"]:
        return poll_reply(
            scripts.POLL.on_thread(server=server, **values) if read is None else _poll_after(read, server, values)
        )
    if read is not None:  # (a wait's polls count no request) the read first, on its own
        read.reply = blocking_connection(server).xread(read.streams, count=10, block=read.block_ms) or []
    # The request rate is one limit per client across servers: counted on the home Redis, in the
    # same round trip of latency as the type's own poll (docs/type-redis.md).
    home = {**poll_values(task_type, [], rate_limit), "claim": "", "check": ""}
    calls = [scripts.POLL.call(server, **{**values, "throttle": ""}), scripts.POLL.call(HOME, **home)]
    reply, counted = run_scripts(calls)
    poll_reply(counted)  # Throttled
    return poll_reply(reply)


def poll_values(
    task_type: TaskType,
    job_ids: list[str],
    rate_limit: RateLimit | None,
    claim: str = "",
    check: str = "",
    claim_after: int | None = None,
    *,
    open_events: bool = False,
) -> dict[str, Any]:
    """poll.lua's keys and arguments by name."""
    throttle_key, limit, window, cost = "", 0, 0, 0
    if rate_limit is not None:
        cost = rate_limit.cost
        slot = int(time.time() // rate_limit.window)
        throttle_key = keys.throttle(rate_limit.scope, rate_limit.client, slot)
        limit, window = rate_limit.limit, rate_limit.window
    name = task_type.name
    failure_ttl = task_type.setting("failure_ttl")
    return dict(
        pending=keys.pending(name),
        started=keys.started(name),
        throttle=throttle_key,
        **scripts.CLOCK_KEYS,
        aborted=keys.aborted(name),
        canceled=keys.canceled(name),
        waiting=keys.fair_waiting(name),
        used=keys.fair_used(name),
        job_ttl=task_type.setting("job_ttl"),
        limit=limit,
        window=window,
        cost=cost,
        failure_ttl=failure_ttl,
        aborted_outcome=_ABORTED_OUTCOME,
        events_ttl=events.done_ttl(failure_ttl),
        owners_ttl=owners_ttl(task_type),
        claim=claim,
        claim_after="" if claim_after is None else claim_after,
        check=check,
        clients_prefix=keys.fair_clients_prefix(name) if fair_order() else "",
        open_ttl=events.running_ttl(task_type) if open_events else "",
        ids=job_ids,
    )


def poll_reply(reply: list) -> tuple[int, list[Snapshot | None], int]:
    """poll.lua's reply read: the load, a snapshot per job, the client's queued jobs; Throttled."""
    if reply[0].decode() == scripts.THROTTLED:
        raise Throttled(max(1, int(reply[1])))
    _, load, answers, queued = reply
    snapshots = [Snapshot(*(field.decode() for field in answer)) if answer else None for answer in answers]
    return int(load), snapshots, int(queued)


def _poll_after(read: BlockingRead, server: str, values: dict[str, Any]) -> Any:
    """The blocking read, then the poll, sent in one write on a blocking connection: Redis holds
    the poll until the read returns and runs it then (a client's commands run in order), so the
    waiter wakes once, with both replies. Retried as redis-py retries a command (its reply lost
    with a broken connection: the poll again is harmless, its request counted before the wait)."""
    script_keys, args = scripts.POLL.build(values)
    sha = script(scripts.POLL.source, server).sha
    pool = blocking_connection(server).connection_pool
    connection = pool.get_connection()
    commands = [
        ("XREAD", "COUNT", 10, "BLOCK", read.block_ms, "STREAMS", *read.streams, *read.streams.values()),
        ("EVALSHA", sha, len(script_keys), *script_keys, *args),
    ]

    def send_and_read() -> Any:
        connection.send_packed_command(connection.pack_commands(commands))
        try:
            reply = connection.read_response()
        except redis.exceptions.ResponseError:
            connection.read_response()  # the poll's too, before the read's error is raised
            raise
        read.reply = list(reply.items()) if isinstance(reply, dict) else reply or []  # RESP3: a map
        return connection.read_response()

    try:
        return connection.retry.call_with_retry(send_and_read, lambda _error: connection.disconnect())
    except redis.exceptions.NoScriptError:  # a flushed or restarted Redis: the poll loads it
        return scripts.POLL.on_thread(server=server, **values)
    except BaseException:
        connection.disconnect()
        raise
    finally:
        pool.release(connection)


def state_of(
    task_type: TaskType, job_id: str, snapshot: Snapshot, data: dict[str, Any], load: int
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
    # A finished job's last progress is of no interest; a stale write after its end is ignored.
    progress = json.loads(snapshot.progress) if snapshot.progress and snapshot.status == STARTED else None
    output = json.loads(snapshot.output) if snapshot.output else None  # kept after the end, as streamed
    return JobState(job_id, task_type.name, snapshot.status, data, result, error, load, progress, output)


def _fetch(job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=redis_for_job(job_id))
    except NoSuchJobError:
        return None
