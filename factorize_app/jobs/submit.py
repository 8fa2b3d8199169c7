"""The web's submit side: submit-or-poll, one input or a batch, and the enqueue of new jobs.

The clients that submitted a job are its owners (dedup makes several): only they may cancel or
retry it (`control`), and a caller may ask that a job it does not own be answered as missing
(with API keys, a read by id). A client's queued jobs of a type are capped
(MAX_QUEUED_PER_CLIENT, or its key's own), and so is the Redis memory they hold (`budgets`).

A submit polls its inputs first (`status.poll_many`, one round trip that also counts the
client's request) and enqueues only the ones missing, in one transaction; it answers those as
queued from what it knows, without polling them again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import redis
from django.conf import settings
from rq.job import Retry

from factorize_app.jobs import budgets, file_inputs, keys, scripts
from factorize_app.jobs.connection import HOME, redis_connection, redis_for, rq_queue, server_of
from factorize_app.jobs.errors import (
    ClientLimitExceeded,
    QueueUnavailable,
    SubmitRefused,
    translate_outages,
    write_refusal,
)
from factorize_app.jobs.ids import description_for, job_id_for, keep_stored_key, queued_input
from factorize_app.jobs.monitoring import admit_new_jobs
from factorize_app.jobs.states import QUEUED, ClientLimits, JobState, RateLimit, fair_order
from factorize_app.jobs.status import BlockingRead, poll_many, state_of, wait_until_done
from factorize_app.tasks import TaskType, run_task


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
    them all, one transaction enqueueing the new ones (after a round trip that WATCHes them). With `wait`, hold until
    every one is done or the time is up. New jobs are refused (SubmitRefused) when Redis refuses
    writes or its memory is past the high-water mark; inputs already queued or done still answer.
    With `rate_limit`, the request counts its `cost` against the client's allowance, in the first
    round trip."""
    try:
        states = _submit_batch(task_type, items, client, rate_limit, cancel_after, limits or ClientLimits())
        return wait_until_done(task_type, states, wait, lambda read: _submit_batch(task_type, items, client, read=read))
    except SubmitRefused:
        raise
    except redis.exceptions.RedisError as exc:
        reason = write_refusal(exc)
        if reason is None:
            raise
        raise SubmitRefused(reason, str(exc)) from exc


def enqueue(
    task_type: TaskType,
    new_jobs: dict[str, dict[str, Any]],
    client: str,
    cancel_after: int | None = None,
    limits: ClientLimits | None = None,
) -> bool:
    """Enqueue jobs found missing, in one transaction that fails if any of them appeared
    meanwhile (another request enqueued it: the caller polls again and sees it); True when they
    were. `client` is their one owner (named in each job's hash: a second owner's joining makes
    the owners a set, poll.lua)."""
    job_ttl = task_type.setting("job_ttl")
    queue = rq_queue(task_type.name)
    job_keys = [keys.job(job_id) for job_id in new_jobs]
    at_home = server_of(task_type.name) == HOME
    if not at_home:  # the job id key is the deployment's one, on the home Redis
        keep_stored_key(redis_connection())
    with redis_for(task_type.name).pipeline(transaction=True) as pipe:
        try:
            if not _watch_absent(pipe, job_keys):
                return False
            pipe.multi()
            if at_home:
                keep_stored_key(pipe)
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
            # Owners of an earlier job of the same input (its files may have kept them): not this one's.
            pipe.delete(*(key for job_id in new_jobs for key in (keys.owners(job_id), keys.deadlines(job_id))))
            owner = client or "anonymous"
            fair_client = owner if fair_order() else ""
            name = task_type.name
            scripts.AFTER_ENQUEUE(
                pipe,
                pending=keys.pending(name),
                waiting=keys.fair_waiting(name),
                used=keys.fair_used(name),
                client_list=keys.fair_client(name, fair_client),
                wake=keys.wake(name),
                caps=keys.fair_caps(name),
                owner=owner,
                client=fair_client,
                cap="" if limits is None or limits.max_running is None else limits.max_running,
                job_ttl=job_ttl,
                cancel_after="" if cancel_after is None else cancel_after,
                ids=list(new_jobs),
            )
            pipe.execute()
            return True
        except redis.exceptions.WatchError:
            return False


def _submit_batch(
    task_type: TaskType,
    items: list[dict[str, Any]],
    client: str,
    rate_limit: RateLimit | None = None,
    cancel_after: int | None = None,
    limits: ClientLimits | None = None,
    *,
    read: BlockingRead | None = None,
) -> list[JobState]:
    ids = [job_id_for(task_type, data) for data in items]
    inputs = dict(zip(ids, items, strict=True))
    states: dict[str, JobState] = {}
    owner = client or "anonymous"
    for _attempt in range(5):
        waiting = [job_id for job_id in inputs if job_id not in states]
        load, snapshots, queued = poll_many(
            task_type, waiting, rate_limit, claim=owner, claim_after=cancel_after, read=read
        )
        rate_limit = read = None  # counted once; waited on once
        missing = []
        for job_id, snapshot in zip(waiting, snapshots, strict=True):
            state = state_of(task_type, job_id, snapshot, inputs[job_id], load) if snapshot else None
            if state is None:
                missing.append(job_id)
            else:
                states[job_id] = state
        if not missing:
            return _in_order(states, ids, load)
        admit_new_jobs(task_type=task_type, count=len(missing))
        _check_queued_cap(queued, len(missing), limits or ClientLimits())
        budgets.charge(task_type=task_type, client=client, new_inputs=[inputs[job_id] for job_id in missing],
                       budget=(limits or ClientLimits()).redis_bytes)  # fmt: skip
        if task_type.file_fields:  # a retry's input files too, kept until the job and its result expire
            file_inputs.keep_inputs(task_type=task_type, inputs=[inputs[job_id] for job_id in missing])
        if enqueue(task_type, {job_id: inputs[job_id] for job_id in missing}, client, cancel_after, limits):
            # Answered from what is known, without polling again: queued, the load grown by them.
            states.update((job_id, JobState(job_id, task_type.name, QUEUED, inputs[job_id])) for job_id in missing)
            return _in_order(states, ids, load + len(missing))
    raise QueueUnavailable(f"{len(missing)} jobs kept changing under concurrent requests; try again")


def _watch_absent(pipe: redis.client.Pipeline, job_keys: list[str]) -> bool:
    """WATCH the jobs' keys and look whether any exists yet, in one round trip (redis-py would
    send each in a round trip of its own): a job enqueued between the poll and the WATCH is seen
    here, one enqueued after it fails the transaction."""
    commands = [("WATCH", *job_keys), ("EXISTS", *job_keys)]
    connection = pipe.connection or pipe.connection_pool.get_connection()
    pipe.connection = connection  # the pipeline's own from now on: it unwatches and returns it
    for attempt in (1, 2):  # a pooled connection broken since its last use is retried once
        try:
            connection.send_packed_command(connection.pack_commands(commands))
            connection.read_response()
            pipe.watching = True
            return connection.read_response() == 0
        except redis.exceptions.ConnectionError:
            connection.disconnect()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _in_order(states: dict[str, JobState], ids: list[str], load: int) -> list[JobState]:
    """The answers in the order asked, every one carrying the latest load."""
    return [states[job_id] if states[job_id].load == load else dataclasses.replace(states[job_id], load=load)
            for job_id in ids]  # fmt: skip


def _check_queued_cap(queued: int, adding: int, limits: ClientLimits) -> None:
    """ClientLimitExceeded when `adding` more queued jobs would pass the client's cap (fair order
    keeps each client's queued jobs in a list of its own, whose length the poll answered as
    `queued`, -1 in FIFO order; checked before the enqueue, so concurrent submits of one client
    may pass it by a request's worth)."""
    cap = limits.queued
    if queued < 0 or cap <= 0:
        return
    if queued + adding > cap:
        raise ClientLimitExceeded("MAX_QUEUED_PER_CLIENT", cap)
