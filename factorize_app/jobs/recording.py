"""Recording a batch's ends: one script call per type (finish.lua) in the usual case, each job as
RQ records it (status, result stream, registries, TTLs, worker counters) plus the JSON polls
answer, the duration histogram and fair order's accounts; jobs handed back go to their queue's
front in the same transaction, with their streamed pieces not yet written before the ends."""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from rq.results import Result
from rq.utils import now as rq_now
from rq.utils import utcformat
from rq.worker import WorkerStatus

from factorize_app.jobs import events, keys, scripts
from factorize_app.jobs.connection import worker_redis, worker_server
from factorize_app.jobs.errors import translate_outages
from factorize_app.jobs.ids import queued_input
from factorize_app.jobs.outputs import queue_outputs
from factorize_app.jobs.states import (
    ABORTED,
    CANCELED,
    DURATION_BUCKETS,
    FAILED,
    FINISHED,
    QUEUED,
    describe_error,
)
from factorize_app.jobs.worker_side import JobOutcome, TakenJob
from factorize_app.tasks import get_task_type

# Where each outcome is recorded: RQ's registries (ours for aborted, which RQ has no word for).
_REGISTRIES = {FINISHED: keys.finished, FAILED: keys.failed, CANCELED: keys.canceled, ABORTED: keys.aborted}
_RESULT_TYPES = {
    FINISHED: Result.Type.SUCCESSFUL,
    FAILED: Result.Type.FAILED,
    CANCELED: Result.Type.STOPPED,
    ABORTED: Result.Type.STOPPED,
}


@translate_outages
def finish_jobs(
    *, worker_name: str, outcomes: list[JobOutcome], unstarted: list[TakenJob] = (), batch_done: bool = True
) -> None:
    """Record outcomes, each as RQ records it (status, result stream, finished/failed registry,
    TTLs, worker counters), with the JSON that polls answer, the duration histogram and, in fair
    order, their clients' worker time settled: one script call per type (finish.lua). Jobs in
    `unstarted` (a warm stop, or jobs held up by a long one), and those whose outcome is QUEUED
    (stopped to give the worker back), go back to the queue's front, waking an idle worker for
    them, in the same transaction. `batch_done`: the worker is idle again (a batch records its
    results in several calls while it runs).
    """
    returned = [outcome for outcome in outcomes if outcome.status == QUEUED]
    outcomes = [outcome for outcome in outcomes if outcome.status != QUEUED]
    unstarted = [*unstarted, *(outcome.job for outcome in returned)]
    by_type: dict[str, list[JobOutcome]] = {}
    for outcome in outcomes:
        by_type.setdefault(outcome.job.task_name, []).append(outcome)
    calls = [_finish_call(worker_name, name, ran, idle=False) for name, ran in by_type.items()]
    pieces = {outcome.job.job_id: outcome.output for outcome in outcomes if outcome.output}
    if not unstarted and len(calls) <= 1 and not pieces:  # the usual case: one call, atomic as a script is
        if calls:
            scripts.FINISH(**{**calls[0], "idle": int(batch_done)}, server=worker_server())
        elif batch_done:
            worker_redis().hset(keys.worker(worker_name), "state", WorkerStatus.IDLE.value)
        return
    with worker_redis().pipeline(transaction=True) as pipe:
        queue_outputs(pipe, pieces)  # streamed pieces not yet written: before the jobs' ends
        for call in calls:
            scripts.FINISH(pipe, **call)
        for job in reversed(unstarted):
            _end_execution(pipe, job, worker_name)
            job_ttl = get_task_type(job.task_name).setting("job_ttl")
            key = keys.job(job.job_id)
            pipe.hset(key, mapping={"status": QUEUED, "worker_name": ""})
            pipe.hdel(key, keys.PROGRESS_FIELD, keys.OUTPUT_FIELD, keys.OUTPUT_IDS_FIELD)  # its next run streams anew
            pipe.expire(key, job_ttl)
            scripts.EVENT(pipe, events=keys.events(job.job_id), ttl=job_ttl, status=QUEUED, outcome="", progress="")
            pipe.zadd(keys.pending(job.task_name), {job.job_id: time.time() + job_ttl})
            pipe.lpush(keys.queue(job.task_name), job.job_id)
            if job.input is not None:
                pipe.hset(keys.queued_inputs(job.task_name), job.job_id, queued_input(job.input, job.client))
        _settle(pipe, worker_name, returned, unstarted)
        for name in {job.task_name for job in unstarted}:
            pipe.lpush(keys.wake(name), 1)
            pipe.ltrim(keys.wake(name), 0, keys.WAKE_TOKENS - 1)
        if batch_done:
            pipe.hset(keys.worker(worker_name), "state", WorkerStatus.IDLE.value)
        pipe.execute()


def _finish_call(worker_name: str, name: str, outcomes: list[JobOutcome], *, idle: bool) -> dict[str, Any]:
    """finish.lua's keys and arguments for the outcomes of one type's jobs."""
    ended_at = utcformat(rq_now())
    histogram: dict[str, float] = {}
    working_time = 0.0
    counts = {FINISHED: 0, FAILED: 0, CANCELED: 0, ABORTED: 0}
    accounts: dict[str, list[float]] = {}
    records: list[dict[str, Any]] = []
    for outcome in outcomes:
        job = outcome.job
        finished = outcome.status == FINISHED
        ttl = job.result_ttl if finished else job.failure_ttl
        cached = {"result": outcome.result} if finished else {"error": describe_error(outcome.exc_string, job.timeout)}
        entry = Result(
            job_id=job.job_id,
            type=_RESULT_TYPES[outcome.status],
            connection=worker_redis(),
            return_value=outcome.result if finished else None,
            exc_string=None if finished else (outcome.exc_string or ""),
            worker_name=worker_name,
            execution_id=job.execution.rpartition(":")[2],
        ).serialize()
        also = keys.canceled(name) if outcome.status == ABORTED else ""  # RQ's dashboard: canceled
        status, state = (CANCELED, ABORTED) if outcome.status == ABORTED else (outcome.status, "")  # RQ's word, ours
        records.append(
            {
                "id": job.job_id,
                "status": status,
                "state": state,
                "outcome": json.dumps(cached),
                "ttl": ttl,
                "events_ttl": events.done_ttl(ttl),
                "registry": _REGISTRIES[outcome.status](name),
                "also": also,
                "execution": job.execution,
                "score": f"{time.time() + ttl:.6f}",
                "entry": [item for pair in entry.items() for item in pair],
            }
        )
        counts[outcome.status] += 1
        working_time += outcome.seconds
        bucket = next((f"{bound}" for bound in DURATION_BUCKETS if outcome.seconds <= bound), "+Inf")
        for field, value in ((f"{outcome.status}:{bucket}", 1), (f"{outcome.status}:sum", outcome.seconds)):
            histogram[field] = histogram.get(field, 0) + value
        if job.client:
            account = accounts.setdefault(job.client, [0, 0.0])
            account[0] -= 1
            account[1] += outcome.seconds - job.estimate
    return {
        "executions": keys.worker_executions(worker_name),
        "worker": keys.worker(worker_name),
        "started": keys.started(name),
        "snapshot": keys.reconcile_running(name),
        "durations": keys.durations(name),
        "waiting": keys.fair_waiting(name),
        "used": keys.fair_used(name),
        "running": keys.fair_running(name),
        "holders": keys.fair_holders(name),
        "ended_at": ended_at,
        "idle": int(idle),
        "clients_prefix": keys.fair_clients_prefix(name),
        "successful": counts[FINISHED],
        "failed": counts[FAILED],
        "working_time": f"{working_time:.6f}",
        "histogram": [{"field": field, "value": f"{value:.6f}"} for field, value in histogram.items()],
        "accounts": [
            {"client": client, "running": running, "use": f"{seconds:.6f}"}
            for client, (running, seconds) in accounts.items()
        ],
        "jobs": records,
    }


def _settle(pipe: redis.client.Pipeline, worker_name: str, ran: list[JobOutcome], handed_back: list[TakenJob]) -> None:
    """Queue the settling of fair order's accounts (settle.lua) for jobs handed back, one call per
    type: each client's running count, and the worker time of those that ran (stopped to give the
    worker back) against what it was charged, or a refund for those that never ran."""
    by_type: dict[str, dict[str, list[float]]] = {}
    for outcome in ran:
        if outcome.job.client:
            account = by_type.setdefault(outcome.job.task_name, {}).setdefault(outcome.job.client, [0, 0.0])
            account[0] -= 1
            account[1] += outcome.seconds - outcome.job.estimate
    ran_ids = {outcome.job.job_id for outcome in ran}
    for job in handed_back:
        if job.client and job.job_id not in ran_ids:  # never ran: refunded
            account = by_type.setdefault(job.task_name, {}).setdefault(job.client, [0, 0.0])
            account[0] -= 1
            account[1] -= job.estimate
    names = {job.task_name for job in handed_back if job.client} | set(by_type)
    for name in names:
        accounts = by_type.get(name, {})
        scripts.SETTLE(
            pipe,
            waiting=keys.fair_waiting(name),
            used=keys.fair_used(name),
            running=keys.fair_running(name),
            holders=keys.fair_holders(name),
            clients_prefix=keys.fair_clients_prefix(name),
            worker=keys.worker(worker_name),
            accounts=[
                {"client": client, "running": running, "use": f"{seconds:.6f}"}
                for client, (running, seconds) in accounts.items()
            ],
            handed_back=[  # each pushed to the front: the first ends up first
                {"client": job.client, "id": job.job_id}
                for job in reversed(handed_back)
                if job.client and job.task_name == name
            ],
        )


def _end_execution(pipe: redis.client.Pipeline, job: TakenJob, worker_name: str) -> None:
    pipe.zrem(keys.started(job.task_name), job.execution)
    pipe.delete(keys.execution(job.execution))
    pipe.srem(keys.worker_executions(worker_name), job.execution)
