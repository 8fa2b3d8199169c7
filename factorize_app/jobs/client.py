"""The client's side of the queue: submit-or-poll, status, the long poll, cancel, owners.

The clients that submitted a job are its owners (dedup makes several): only they may cancel or
retry it, and a caller may ask that a job it does not own be answered as missing (with API keys,
a read by id). A client's queued jobs of a type are capped (MAX_QUEUED_PER_CLIENT, or its key's own).

A submit polls its inputs first (one script, `poll.lua`: status, input and cached outcome of
each, the type's load, the client's rate-limit counter) and enqueues only the ones missing, in
one transaction; polling a queued job keeps it alive (its TTL and its pending deadline are
refreshed together). Load without scanning: RQ's queue list keeps the ids of expired jobs until
a worker pops them, so its length over-counts; each task type therefore keeps a sorted set of
its queued job ids scored by expiry deadline (the same deadline as the job hash's EXPIRE), and
live queued jobs are the members whose deadline lies ahead.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from rq.exceptions import NoSuchJobError
from rq.job import Job, Retry
from rq.utils import now as rq_now
from rq.utils import utcformat

from factorize_app.jobs import budgets, events, keys
from factorize_app.jobs.connection import (
    CLOCK_KEYS,
    OUTAGE_GAP,
    blocking_connection,
    lua,
    redis_connection,
    rq_queue,
    run_script,
    script,
)
from factorize_app.jobs.errors import (
    ClientLimitExceeded,
    JobNotCancellable,
    JobNotFound,
    JobNotRetryable,
    QueueUnavailable,
    SubmitRefused,
    Throttled,
    translate_outages,
    write_refusal,
)
from factorize_app.jobs.ids import (
    description_for,
    input_of,
    job_id_for,
    keep_stored_key,
    queued_input,
    task_type_of,
)
from factorize_app.jobs.monitoring import admit_new_jobs
from factorize_app.jobs.release import released, wake_key
from factorize_app.jobs.states import (
    ABORTED,
    ABORTED_ERROR,
    CANCELED,
    CANCELED_ERROR,
    DONE_STATUSES,
    FINISHED,
    RETRYABLE,
    STARTED,
    ClientLimits,
    JobState,
    RateLimit,
    describe_error,
    fair_order,
)
from factorize_app.tasks import TaskType, run_task, task_types

_POLL = lua("poll", "clock_tick", "append_event")
_AFTER_ENQUEUE = lua("after_enqueue")
_CANCEL = lua("cancel")
_ABORTED_OUTCOME = json.dumps({"error": ABORTED_ERROR})
_CANCELED_OUTCOME = json.dumps({"error": CANCELED_ERROR})


@translate_outages
def submit(
    *,
    task_type: TaskType,
    data: dict[str, Any],
    wait: float = 0,
    client: str = "",
    rate_limit: RateLimit | None = None,
    cancel_after: int | None = None,
    limits: ClientLimits | None = None,
) -> JobState:
    """Submit-or-poll: enqueue the job unless it is already queued, running or cached.

    `client` names who asked, for fair order between clients and as an owner of the job;
    `limits` are its own caps (ClientLimitExceeded beyond the queued one). With `wait`, hold up to that many
    seconds for the job to finish (a long poll). With `rate_limit`, count this request against
    the client's allowance first (in the same round trip), raising Throttled when it is used up.
    With `cancel_after`, the job is cancelled that many seconds from now unless another of its
    owners still wants it: a deadline is its submitter's (a job shared by several owners stops at
    the latest of their deadlines, never while one of them set none); a later submit of the same
    input by the same client polls it and does not move its deadline.
    """
    return submit_many(
        task_type=task_type,
        items=[data],
        wait=wait,
        client=client,
        rate_limit=rate_limit,
        cancel_after=cancel_after,
        limits=limits,
    )[0]


@translate_outages
def submit_many(
    *,
    task_type: TaskType,
    items: list[dict[str, Any]],
    wait: float = 0,
    client: str = "",
    rate_limit: RateLimit | None = None,
    cancel_after: int | None = None,
    limits: ClientLimits | None = None,
) -> list[JobState]:
    """Submit-or-poll many inputs of one type, in order, in a handful of round trips: one poll of
    them all, one transaction enqueueing the new ones, one poll again. With `wait`, hold until
    every one is done or the time is up. New jobs are refused (SubmitRefused) when Redis refuses
    writes or its memory is past the high-water mark; inputs already queued or done still answer.
    With `rate_limit`, the request counts its `cost` against the client's allowance, in the first
    round trip."""
    try:
        states = _submit_batch(task_type, items, client, rate_limit, cancel_after, limits or ClientLimits())
        return _wait_until_done(task_type, states, wait, lambda: _submit_batch(task_type, items, client))
    except SubmitRefused:
        raise
    except redis.exceptions.RedisError as exc:
        reason = write_refusal(exc)
        if reason is None:
            raise
        raise SubmitRefused(reason, str(exc)) from exc


@translate_outages
def get_status(
    *, job_id: str, wait: float = 0, rate_limit: RateLimit | None = None, owner: str = ""
) -> JobState:
    """Poll a job by id; like a repeated submit, this keeps a queued job alive. With `owner`, a
    job that client does not own is JobNotFound (its id tells nothing)."""
    task_type = task_type_of(job_id)
    state = _status_once(task_type, job_id, rate_limit, owner)
    return _wait_until_done(task_type, [state], wait, lambda: [_status_once(task_type, job_id, owner=owner)])[0]


@translate_outages
def is_owner(*, job_id: str, client: str) -> bool:
    """Whether `client` submitted the job (one of its owners)."""
    return bool(redis_connection().sismember(keys.owners(job_id), client))


@translate_outages
def count_request(*, rate_limit: RateLimit) -> None:
    """Count a request that touches no job against the client's allowance (its `cost`); raise Throttled."""
    _poll_many(task_types()[0], [], rate_limit)


@translate_outages
def cancel(*, job_id: str, client: str = "", staff: bool = False) -> JobState | None:
    """Cancel a job for its owner `client` (or for everyone, by `staff`): a queued one at once (it
    leaves the queue and ends `canceled`); a running one is asked to stop (its worker interrupts
    the handler within a second, and it ends `canceled`). While other owners still want it, only
    this owner's interest is withdrawn, and None is answered. Else answers the job's state;
    JobNotFound for a job the client does not own, JobNotCancellable for a job already done."""
    task_type = task_type_of(job_id)
    state = get_status(job_id=job_id)  # JobNotFound for an id this service did not make
    name = task_type.name
    reply = script(_CANCEL)(
        keys=[keys.job(job_id), keys.owners(job_id), keys.pending(name), keys.queued_inputs(name), keys.canceled(name),
              keys.deadlines(job_id)],  # fmt: skip
        args=[job_id, task_type.setting("failure_ttl"), utcformat(rq_now()), keys.STOP_PREFIX, _CANCELED_OUTCOME,
              CANCELED_ERROR, "" if staff else (client or "anonymous"), keys.fair_clients_prefix(name),
              keys.STATE_FIELD],  # fmt: skip
    )
    answer = reply[0].decode()
    if answer == "missing":
        raise JobNotFound(job_id)
    if answer == "withdrawn":
        return None
    if answer == "done":
        raise JobNotCancellable(reply[1].decode())
    if answer == "canceled":
        ttl = events.done_ttl(task_type.setting("failure_ttl"))
        events.record(job_id, CANCELED, ttl=ttl, outcome=_CANCELED_OUTCOME)
    return get_status(job_id=job_id) if answer == "canceled" else state


@translate_outages
def retry(*, job_id: str, client: str = "", staff: bool = False, limits: ClientLimits | None = None) -> JobState:
    """Queue a job that ended failed, canceled or aborted again, under the same id (its input is
    its id's), for one of its owners (or `staff`): its old outcome is dropped and it is submitted
    afresh, `client` its owner."""
    task_type = task_type_of(job_id)
    state = get_status(job_id=job_id, owner="" if staff else (client or "anonymous"))
    if state.status not in RETRYABLE:
        raise JobNotRetryable(state.status)
    name = task_type.name
    with redis_connection().pipeline(transaction=True) as pipe:
        pipe.delete(keys.job(job_id), keys.results(job_id), keys.events(job_id))  # a clean start
        for registry in (keys.failed(name), keys.canceled(name), keys.aborted(name)):
            pipe.zrem(registry, job_id)
        pipe.execute()
    return submit(task_type=task_type, data=state.input, client=client, limits=limits)


def owners_ttl(task_type: TaskType) -> int:
    """A job's owners outlive it: its wait, its run and its kept outcome."""
    kept = max(task_type.setting("result_ttl"), task_type.setting("failure_ttl"))
    return task_type.setting("job_ttl") + task_type.setting("job_timeout") + kept


def enqueue(
    task_type: TaskType,
    new_jobs: dict[str, dict[str, Any]],
    client: str,
    cancel_after: int | None = None,
    limits: ClientLimits | None = None,
) -> None:
    """Enqueue jobs found missing, in one transaction that fails if any of them appeared
    meanwhile (another request enqueued it: the caller polls again and sees it). `client` is
    their first owner."""
    job_ttl = task_type.setting("job_ttl")
    queue = rq_queue(task_type.name)
    job_keys = [keys.job(job_id) for job_id in new_jobs]
    with redis_connection().pipeline(transaction=True) as pipe:
        try:
            pipe.watch(*job_keys)
            if pipe.exists(*job_keys):
                return
            redis_time, micros = pipe.time()
            pipe.multi()
            keep_stored_key(pipe)
            # Deadlines first, so a worker that starts a job at once removes its deadline for good.
            pipe.zadd(keys.pending(task_type.name), {job_id: redis_time + job_ttl for job_id in new_jobs})
            pipe.hset(
                keys.queued_inputs(task_type.name),
                mapping={job_id: queued_input(data, client) for job_id, data in new_jobs.items()},
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
                    description=description_for(task_type, data),
                    # RQ re-queues a job whose worker died (its lease expired) while retries are
                    # left; a handler's own exception is the job's answer and is not retried.
                    retry=Retry(max=settings.JOB_MAX_RETRIES) if settings.JOB_MAX_RETRIES > 0 else None,
                    pipeline=pipe,
                )
            # From this instant, to the microsecond: whole seconds alone set it up to 1 s early.
            deadline = None if cancel_after is None else redis_time + micros / 1e6 + cancel_after
            for job_id in new_jobs:  # a job made anew has only this client for owner, and its deadline
                if deadline is not None:
                    pipe.hset(keys.job(job_id), keys.DEADLINE_FIELD, deadline)
                pipe.delete(keys.owners(job_id), keys.deadlines(job_id))
                pipe.sadd(keys.owners(job_id), client or "anonymous")
                pipe.hset(keys.deadlines(job_id), client or "anonymous", "none" if deadline is None else deadline)
                pipe.expire(keys.owners(job_id), owners_ttl(task_type))
                pipe.expire(keys.deadlines(job_id), owners_ttl(task_type))
            fair_client = (client or "anonymous") if fair_order() else ""
            name = task_type.name
            own_cap = "" if limits is None or limits.max_running is None else limits.max_running
            script(_AFTER_ENQUEUE)(
                keys=[
                    keys.fair_waiting(name),
                    keys.fair_used(name),
                    keys.fair_client(name, fair_client),
                    keys.wake(name),
                    keys.fair_caps(name),
                ],
                args=[fair_client, keys.WAKE_TOKENS, keys.JOB_PREFIX, own_cap, *new_jobs],
                client=pipe,
            )
            pipe.execute()
        except redis.exceptions.WatchError:
            return


def _submit_batch(
    task_type: TaskType,
    items: list[dict[str, Any]],
    client: str,
    rate_limit: RateLimit | None = None,
    cancel_after: int | None = None,
    limits: ClientLimits | None = None,
) -> list[JobState]:
    ids = [job_id_for(task_type, data) for data in items]
    inputs = dict(zip(ids, items, strict=True))
    states: dict[str, JobState] = {}
    owner = client or "anonymous"
    for _attempt in range(5):
        waiting = [job_id for job_id in inputs if job_id not in states]
        load, snapshots = _poll_many(task_type, waiting, rate_limit, claim=owner, claim_after=cancel_after)
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
        admit_new_jobs(task_type=task_type, count=len(missing))
        _check_queued_cap(task_type, client, len(missing), limits or ClientLimits())
        budgets.charge(task_type=task_type, client=client, new_inputs=[inputs[job_id] for job_id in missing],
                       budget=(limits or ClientLimits()).redis_bytes)  # fmt: skip
        enqueue(task_type, {job_id: inputs[job_id] for job_id in missing}, client, cancel_after, limits)
    raise QueueUnavailable(f"{len(missing)} jobs kept changing under concurrent requests; try again")


def _check_queued_cap(task_type: TaskType, client: str, adding: int, limits: ClientLimits) -> None:
    """ClientLimitExceeded when `adding` more queued jobs would pass the client's cap (fair order
    keeps each client's queued jobs in a list of its own; checked before the enqueue, so
    concurrent submits of one client may pass it by a request's worth)."""
    cap = limits.queued
    if not fair_order() or cap <= 0:
        return
    queued = redis_connection().llen(keys.fair_client(task_type.name, client or "anonymous"))
    if queued + adding > cap:
        raise ClientLimitExceeded("MAX_QUEUED_PER_CLIENT", cap)


def _status_once(
    task_type: TaskType, job_id: str, rate_limit: RateLimit | None = None, owner: str = ""
) -> JobState:
    load, (snapshot,) = _poll_many(task_type, [job_id], rate_limit, check=owner)
    data = input_of(task_type, job_id, snapshot.description) if snapshot else None
    state = _state(task_type, job_id, snapshot, data, load) if data is not None else None
    if state is None:
        raise JobNotFound(job_id)
    return state


def _wait_until_done(
    task_type: TaskType, states: list[JobState], seconds: float, poll: Callable[[], list[JobState]]
) -> list[JobState]:
    """Block on the jobs' RQ result streams (XREAD; every waiter wakes when a worker writes a
    result), never spinning on Redis; then poll again. Re-polling at least every half JOB_TTL
    keeps queued jobs alive while their client waits. The process's wake-up stream is read too:
    a stopping server ends every wait at once (`release`)."""
    deadline = time.monotonic() + min(seconds, settings.MAX_WAIT)
    chunk = max(1.0, task_type.setting("job_ttl") / 2)
    seen: dict[str, str] = {}
    while not all(state.done for state in states) and not released():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        streams = {keys.results(s.job_id): seen.get(s.job_id, "0-0") for s in states if not s.done}
        streams[wake_key()] = "0-0"
        block_ms = max(1, int(min(remaining, chunk) * 1000))
        for stream, entries in blocking_connection().xread(streams, count=10, block=block_ms) or []:
            seen[stream.decode().removeprefix(keys.RESULTS_PREFIX)] = entries[-1][0]
        states = poll()
    return states


@dataclass(frozen=True)
class _Snapshot:
    status: str
    description: str
    outcome: str
    progress: str  # JSON the worker wrote while the job runs, or ""


def _poll_many(
    task_type: TaskType,
    job_ids: list[str],
    rate_limit: RateLimit | None = None,
    *,
    claim: str = "",
    check: str = "",
    claim_after: int | None = None,
) -> tuple[int, list[_Snapshot | None]]:
    """The type's load and a snapshot of each job (None: no such job, or, with `check`, not that
    client's), in one round trip; `claim` makes a client an owner of each job that exists, with its
    own deadline (`claim_after` seconds from now; None: none) and, in fair order, its own turn."""
    throttle_key, limit, window, cost = "", 0, 0, 0
    if rate_limit is not None:
        cost = rate_limit.cost
        slot = int(time.time() // rate_limit.window)
        throttle_key = keys.throttle(rate_limit.scope, rate_limit.client, slot)
        limit, window = rate_limit.limit, rate_limit.window
    name = task_type.name
    script_keys = [keys.pending(name), keys.started(name), throttle_key, *CLOCK_KEYS]
    script_keys += [keys.aborted(name), keys.canceled(name), keys.fair_waiting(name), keys.fair_used(name)]
    failure_ttl = task_type.setting("failure_ttl")
    args = [task_type.setting("job_ttl"), limit, window, OUTAGE_GAP, keys.JOB_PREFIX, failure_ttl, _ABORTED_OUTCOME]
    args += [keys.EVENTS_PREFIX, events.EVENTS_MAXLEN, events.done_ttl(failure_ttl)]
    args += [keys.OWNERS_PREFIX, claim, check, owners_ttl(task_type), cost, keys.STATE_FIELD, CANCELED, ABORTED]
    args += ["" if claim_after is None else claim_after, keys.DEADLINES_PREFIX]
    args += [keys.fair_clients_prefix(name) if fair_order() else ""]
    args += job_ids
    reply = run_script(_POLL, script_keys, args)
    if reply[0] == b"throttled":
        raise Throttled(max(1, int(reply[1])))
    _, load, answers = reply
    snapshots = [_Snapshot(*(field.decode() for field in answer)) if answer else None for answer in answers]
    return int(load), snapshots


def _state(task_type: TaskType, job_id: str, snapshot: _Snapshot, data: dict[str, Any], load: int) -> JobState | None:
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
    return JobState(job_id, task_type.name, snapshot.status, data, result, error, load, progress)


def _fetch(job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=redis_connection())
    except NoSuchJobError:
        return None
