"""The worker's side of the queue: batches taken, leased, and the wake-ups in between.

A worker takes a batch in one round trip (`take.lua`), each job STARTED exactly as RQ's own
worker leaves it; keeps the batch leased while it runs (`extend_lease.lua`); and records it
(`recording`: one script call, as RQ records jobs, plus the JSON polls answer and the duration
histogram). Idle, it blocks on the wake-up tokens submits push. Its maintenance is in `maintenance`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from rq.utils import now as rq_now
from rq.utils import utcformat

from factorize_app.jobs import events, keys, scripts
from factorize_app.jobs.connection import blocking_connection, worker_redis, worker_server
from factorize_app.jobs.errors import translate_outages
from factorize_app.jobs.ids import input_of, task_type_of
from factorize_app.jobs.outputs import Pieces
from factorize_app.jobs.states import (
    fair_order,
)
from factorize_app.tasks import get_task_type

# A job's cost charged to its client when taken, until the worker knows the type's (seconds).
DEFAULT_ESTIMATE = 0.001


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
        server=worker_server(),
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
    scripts.EXTEND_LEASE(lease=lease, jobs=leased, server=worker_server())


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
        server=worker_server(),
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


@translate_outages
def take_stop_requests(*, worker_name: str) -> dict[str, bool]:
    """The running jobs this worker has been asked about since it last looked: each id, and
    whether it is to stop (a DELETE, RQ's stop command) or only to read its deadline again
    (job_deadlines: an owner of a shared job withdrew)."""
    with worker_redis().pipeline(transaction=True) as pipe:
        pipe.smembers(keys.stop_requests(worker_name))
        pipe.delete(keys.stop_requests(worker_name))
        members, _ = pipe.execute()
    ids = sorted(member.decode() for member in members)
    if not ids:
        return {}
    with worker_redis().pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(keys.job(job_id), keys.STOP_FIELD)  # '' once recorded: none
        stops = pipe.execute()
    return dict(zip(ids, map(bool, stops), strict=True))


@translate_outages
def job_deadlines(*, job_ids: list[str]) -> dict[str, float | None]:
    """The jobs' Cancel-After deadlines now (Unix time; None: none). A shared job's deadline
    moves while it runs: a later owner that set none lifts it, one with a later one extends it."""
    with worker_redis().pipeline(transaction=False) as pipe:
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
    scripts.PROGRESS(jobs=reports, server=worker_server())  # only for jobs still started: see progress.lua


@translate_outages
def wait_for_work(*, queue_names: list[str], timeout: float) -> bool:
    """Block until a submit signals new work on one of the queues (True), or `timeout` passes.

    Workers take jobs with a script, which cannot block; submits push a wake-up token instead.
    Jobs that reach a queue some other way (RQ's retries, the dashboard) are found at the latest
    when the timeout runs out.
    """
    return (
        blocking_connection(worker_server()).blpop([keys.wake(name) for name in queue_names], timeout=timeout)
        is not None
    )
