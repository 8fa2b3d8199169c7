"""The worker's side of the queue: batches taken, leased, recorded, and the wake-ups in between.

A worker takes a batch in one round trip (`take.lua`), each job STARTED exactly as RQ's own
worker leaves it; keeps the batch leased while it runs (`extend_lease.lua`); and records it in
one transaction, as RQ records jobs, plus the JSON polls answer and the duration histogram.
Idle, it blocks on the wake-up tokens submits push. Its maintenance is in `maintenance`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from rq.results import Result
from rq.utils import now as rq_now
from rq.utils import utcformat
from rq.worker import WorkerStatus

from factorize_app.jobs import events, keys, scripts
from factorize_app.jobs.connection import blocking_connection, redis_connection
from factorize_app.jobs.errors import translate_outages
from factorize_app.jobs.ids import input_of, queued_input, task_type_of
from factorize_app.jobs.outputs import Pieces, queue_outputs
from factorize_app.jobs.states import (
    ABORTED,
    CANCELED,
    DURATION_BUCKETS,
    FAILED,
    FINISHED,
    QUEUED,
    describe_error,
    fair_order,
)
from factorize_app.tasks import get_task_type

# A job's cost charged to its client when taken, until the worker knows the type's (seconds).
DEFAULT_ESTIMATE = 0.001
# Where each outcome is recorded: RQ's registries (ours for aborted, which RQ has no word for).
_REGISTRIES = {FINISHED: keys.finished, FAILED: keys.failed, CANCELED: keys.canceled, ABORTED: keys.aborted}
_RESULT_TYPES = {
    FINISHED: Result.Type.SUCCESSFUL,
    FAILED: Result.Type.FAILED,
    CANCELED: Result.Type.STOPPED,
    ABORTED: Result.Type.STOPPED,
}


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
    stop: str = ""  # a stop asked for before it was taken (its worker died): it is not run
    deadline: float | None = None  # Unix time of its Cancel-After deadline
    client: str = ""  # who it was taken for, in fair order ("" in FIFO order or for RQ's re-queues)
    estimate: float = 0.0  # the seconds its client was charged when it was taken


@dataclass(frozen=True)
class JobOutcome:
    job: TakenJob
    # FINISHED, FAILED, CANCELED (stopped), ABORTED (its deadline passed before it ran) or
    # QUEUED (stopped to give the worker back to another client: queued again, not a retry).
    status: str
    seconds: float
    result: Any = None
    exc_string: str | None = None
    timed_out: bool = False
    output: Pieces | None = None  # streamed pieces not yet written: written before the end is recorded


@translate_outages
def take_jobs(
    *, queue_names: list[str], worker_name: str, count: int, lease: int, estimates: dict[str, float] | None = None
) -> list[TakenJob]:
    """Take up to `count` queued jobs from the first of `queue_names` that has any, in one round trip.

    `estimates`: the worker's idea of a job's seconds per type, charged to each job's client in
    fair order (settled against the real time when the job ends).

    Each taken job is STARTED exactly as RQ's own worker leaves it (status, worker name, an
    execution in the StartedJobRegistry), so the dashboard and `rq info` see it running, and a
    worker that dies mid-batch leaves every unfinished job in the registry, whose lease expiry
    RQ's registry cleanup turns into a retry or an AbandonedJobError failure. Each gets its
    `started` event in the same call.
    """
    execution_id = uuid.uuid4().hex
    queues = [
        {
            "list": keys.queue(name),
            "workers": keys.workers_of(name),
            "started": keys.started(name),
            "pending": keys.pending(name),
            "inputs": keys.queued_inputs(name),
            "waiting": keys.fair_waiting(name),
            "used": keys.fair_used(name),
            "running": keys.fair_running(name),
            "caps": keys.fair_caps(name),
            "name": name,
            "clients": keys.fair_clients_prefix(name),
            "estimate": f"{_estimate(estimates, name):.6f}",
            "cap": settings.MAX_RUNNING_PER_CLIENT,
            "events_ttl": events.running_ttl(get_task_type(name)),
        }
        for name in queue_names
    ]
    reply = scripts.TAKE(
        worker=keys.worker(worker_name),
        **scripts.CLOCK_KEYS,
        suspended=keys.SUSPENDED,
        executions=keys.worker_executions(worker_name),
        count=count,
        lease=lease,
        worker_name=worker_name,
        stamp=utcformat(rq_now()),
        execution_id=execution_id,
        fair=int(fair_order()),
        queues=queues,
    )
    if not reply:
        return []
    name, rows = reply[0].decode(), reply[1:]
    task_type = get_task_type(name)
    estimate = _estimate(estimates, name)
    taken = []
    for job_id, description, timeout, result_ttl, failure_ttl, stop, deadline, client in rows:
        job_id = job_id.decode()
        taken.append(
            TakenJob(
                job_id=job_id,
                task_name=name,
                input=input_of(task_type, job_id, description.decode()),
                timeout=int(timeout or task_type.setting("job_timeout")),
                result_ttl=int(result_ttl or task_type.setting("result_ttl")),
                failure_ttl=int(failure_ttl or task_type.setting("failure_ttl")),
                execution=f"{job_id}:{execution_id}",
                stop=stop.decode(),
                deadline=float(deadline) if deadline else None,
                client=client.decode(),
                estimate=float(f"{estimate:.6f}") if client else 0.0,
            )
        )
    return taken


def _estimate(estimates: dict[str, float] | None, name: str) -> float:
    return (estimates or {}).get(name) or DEFAULT_ESTIMATE


@translate_outages
def extend_lease(*, taken: list[TakenJob], lease: int) -> None:
    """Keep a running batch's jobs leased (the worker's heartbeat, while it works on them)."""
    if not taken:
        return
    leased = [
        {"started": keys.started(job.task_name), "execution": keys.execution(job.execution), "member": job.execution}
        for job in taken
    ]
    scripts.EXTEND_LEASE(lease=lease, jobs=leased)


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
            scripts.FINISH(**{**calls[0], "idle": int(batch_done)})
        elif batch_done:
            redis_connection().hset(keys.worker(worker_name), "state", WorkerStatus.IDLE.value)
        return
    with redis_connection().pipeline(transaction=True) as pipe:
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
            connection=redis_connection(),
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


def _settle(
    pipe: redis.client.Pipeline, worker_name: str, ran: list[JobOutcome], handed_back: list[TakenJob]
) -> None:
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


@translate_outages
def yield_worker(*, worker_name: str, job: TakenJob, started_at: float, ran: float, grace: float) -> bool:
    """Whether this worker's long-running `job` (running `ran` seconds) is to be handed back so
    that another client's waiting job gets the worker (rebalance.lua): its client holds more than
    its fair share of the type's workers, or every worker runs a long job while a client with
    nothing running waits and its client is the heaviest; and it is that client's youngest job
    that may be handed back (one handed back k times only after `grace` * 2^k seconds). Asking
    registers it as a long job's holder."""
    if not job.client:
        return False
    name = job.task_name
    reply = scripts.REBALANCE(
        holders=keys.fair_holders(name),
        waiting=keys.fair_waiting(name),
        workers=keys.workers_of(name),
        used=keys.fair_used(name),
        running=keys.fair_running(name),
        job=keys.job(job.job_id),
        worker=keys.worker(worker_name),
        client=job.client,
        started=f"{started_at:.6f}",
        ran=f"{ran:.6f}",
        grace=f"{grace:.6f}",
    )
    return reply == 1


def _end_execution(pipe: redis.client.Pipeline, job: TakenJob, worker_name: str) -> None:
    pipe.zrem(keys.started(job.task_name), job.execution)
    pipe.delete(keys.execution(job.execution))
    pipe.srem(keys.worker_executions(worker_name), job.execution)


@translate_outages
def take_stop_requests(*, worker_name: str) -> dict[str, bool]:
    """The running jobs this worker has been asked about since it last looked: each id, and
    whether it is to stop (a DELETE, RQ's stop command) or only to read its deadline again
    (job_deadlines: an owner of a shared job withdrew)."""
    with redis_connection().pipeline(transaction=True) as pipe:
        pipe.smembers(keys.stop_requests(worker_name))
        pipe.delete(keys.stop_requests(worker_name))
        members, _ = pipe.execute()
    ids = sorted(member.decode() for member in members)
    if not ids:
        return {}
    with redis_connection().pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(keys.job(job_id), keys.STOP_FIELD)  # '' once recorded: none
        stops = pipe.execute()
    return dict(zip(ids, map(bool, stops), strict=True))


@translate_outages
def job_deadlines(*, job_ids: list[str]) -> dict[str, float | None]:
    """The jobs' Cancel-After deadlines now (Unix time; None: none). A shared job's deadline
    moves while it runs: a later owner that set none lifts it, one with a later one extends it."""
    with redis_connection().pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(keys.job(job_id), keys.DEADLINE_FIELD)
        values = pipe.execute()
    return {job_id: float(value) if value else None for job_id, value in zip(job_ids, values, strict=True)}


@translate_outages
def report_progress(*, progress: dict[str, dict[str, Any]]) -> None:
    """Write running jobs' latest progress (job id -> {"fraction", "message"}) in one round trip;
    the worker calls it at most a few times a second per job, whatever its handler reports."""
    if not progress:
        return
    reports = [
        {
            "hash": keys.job(job_id),
            "events": keys.events(job_id),
            "progress": json.dumps(value),
            "ttl": events.running_ttl(task_type_of(job_id)),
        }
        for job_id, value in progress.items()
    ]
    scripts.PROGRESS(jobs=reports)  # only for jobs still started: see progress.lua


@translate_outages
def wait_for_work(*, queue_names: list[str], timeout: float) -> bool:
    """Block until a submit signals new work on one of the queues (True), or `timeout` passes.

    Workers take jobs with a script, which cannot block; submits push a wake-up token instead.
    Jobs that reach a queue some other way (RQ's retries, the dashboard) are found at the latest
    when the timeout runs out.
    """
    return blocking_connection().blpop([keys.wake(name) for name in queue_names], timeout=timeout) is not None
