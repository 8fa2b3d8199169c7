"""What RQ and its tools did to the queue behind the service's back, noticed and made good.

The service writes every change of a job itself, with its event. RQ's own tools change jobs too:
its registry cleanup (run by `rq info`, the dashboards and every worker) fails or re-queues a job
whose worker died, `rq requeue` and the dashboard's Requeue queue a failed job again, `rq empty`
deletes queued jobs, and a stock RQ worker may run one. `reconcile` finds those changes
(`reconcile.lua`: one process at a time, at most once a second per type, each look bounded):
every status RQ gave a job gets its event, with an id, so event streams and webhooks follow it;
re-queued jobs count as queued again; deleted ones leave the load.
"""

from __future__ import annotations

import json

from rq.exceptions import NoSuchJobError
from rq.job import Job

from factorize_app.jobs import events, keys, scripts
from factorize_app.jobs.connection import redis_for_job, server_of
from factorize_app.jobs.errors import translate_outages
from factorize_app.jobs.states import DONE_STATUSES, FINISHED, describe_error
from factorize_app.tasks import TaskType, task_types

# At most one look per type this often, across every process that asks.
RECONCILE_SECONDS = 1.0
# Ids of the pending set and of RQ's list looked at per look (the rest on later looks), and how
# much of the list's tail, where RQ puts the jobs it queues, is looked at every time.
CHUNK = 250
TAIL = 50


@translate_outages
def reconcile(*, skip: frozenset[str] = frozenset()) -> int:
    """Look for what RQ changed (where no other process looked within the last second), but for
    the types in `skip` (their Redis is down); answers how many events were appended for it."""
    appended = 0
    for task_type in (task_type for task_type in task_types() if task_type.name not in skip):
        name = task_type.name
        found = scripts.RECONCILE(
            server=server_of(name),
            lock=keys.reconcile_lock(name),
            snapshot=keys.reconcile_running(name),
            started=keys.started(name),
            pending=keys.pending(name),
            inputs=keys.queued_inputs(name),
            list=keys.queue(name),
            cursors=keys.reconcile_cursors(name),
            lock_ms=int(RECONCILE_SECONDS * 1000),
            chunk=CHUNK,
            tail=TAIL,
            job_ttl=task_type.setting("job_ttl"),
        )
        for job_id, status in found or []:
            appended += _append_event(task_type, job_id.decode(), status.decode())
    return appended


def _append_event(task_type: TaskType, job_id: str, status: str) -> int:
    """The event of a status RQ gave the job, with the outcome polls would answer for it."""
    outcome, ttl = "", events.running_ttl(task_type)
    if status in DONE_STATUSES:
        try:
            job = Job.fetch(job_id, connection=redis_for_job(job_id))
        except NoSuchJobError:
            return 0
        latest = job.latest_result()
        if status == FINISHED:
            outcome = json.dumps({"result": latest.return_value}) if latest is not None else ""
            ttl = events.done_ttl(task_type.setting("result_ttl"))
        else:
            error = describe_error(latest.exc_string if latest is not None else None, job.timeout)
            outcome = json.dumps({"error": error})
            ttl = events.done_ttl(task_type.setting("failure_ttl"))
    appended = scripts.RECONCILE_EVENT(
        job=keys.job(job_id), events=keys.events(job_id), status=status, outcome=outcome, ttl=ttl,
        server=server_of(task_type.name),
    )  # fmt: skip
    return int(appended)
