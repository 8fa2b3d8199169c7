"""What a job's owners may do to it: cancel it, retry it; and who they are.

The clients that submitted a job are its owners (dedup makes several): only they may cancel or
retry it; staff may for everyone. A cancel is one script (`cancel.lua`), its event appended in
the same step.
"""

from __future__ import annotations

import json

from rq.utils import now as rq_now
from rq.utils import utcformat

from factorize_app.jobs import events, keys, scripts
from factorize_app.jobs.connection import redis_for, redis_for_job, server_of, server_of_job
from factorize_app.jobs.errors import JobNotCancellable, JobNotFound, JobNotRetryable, translate_outages
from factorize_app.jobs.ids import task_type_of
from factorize_app.jobs.states import CANCELED, CANCELED_ERROR, RETRYABLE, ClientLimits, JobState
from factorize_app.jobs.status import get_status
from factorize_app.jobs.submit import submit

_CANCELED_OUTCOME = json.dumps({"error": CANCELED_ERROR})


@translate_outages
def is_owner(*, job_id: str, client: str) -> bool:
    """Whether `client` submitted the job (one of its owners): its one owner is named in its hash,
    several (or those of a job whose files outlive it) in its owners' set."""
    with redis_for_job(job_id).pipeline(transaction=False) as pipe:
        pipe.hget(keys.job(job_id), keys.OWNER_FIELD)
        pipe.sismember(keys.owners(job_id), client)
        owner, member = pipe.execute()
    return owner.decode() == client if owner is not None else bool(member)


@translate_outages
def keep_owners(*, job_id: str, ttl: int) -> None:
    """Keep the job's owners at least `ttl` seconds (its files outlive it), beyond its hash."""
    scripts.KEEP_OWNERS(
        job=keys.job(job_id), owners=keys.owners(job_id), deadlines=keys.deadlines(job_id), ttl=ttl,
        server=server_of_job(job_id),
    )  # fmt: skip


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
    failure_ttl = task_type.setting("failure_ttl")
    reply = scripts.CANCEL(
        server=server_of(name),
        job=keys.job(job_id),
        owners=keys.owners(job_id),
        deadlines=keys.deadlines(job_id),
        pending=keys.pending(name),
        inputs=keys.queued_inputs(name),
        canceled=keys.canceled(name),
        events=keys.events(job_id),
        job_id=job_id,
        caller="" if staff else (client or "anonymous"),
        reason=CANCELED_ERROR,
        ended_at=utcformat(rq_now()),
        outcome=_CANCELED_OUTCOME,
        failure_ttl=failure_ttl,
        events_ttl=events.done_ttl(failure_ttl),
        clients_prefix=keys.fair_clients_prefix(name),
    )
    answer = reply[0].decode()  # see cancel.lua
    if answer == scripts.MISSING:
        raise JobNotFound(job_id)
    if answer == scripts.WITHDRAWN:
        return None
    if answer == scripts.DONE:
        raise JobNotCancellable(reply[1].decode())
    return get_status(job_id=job_id) if answer == CANCELED else state  # else STOPPING


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
    with redis_for(name).pipeline(transaction=True) as pipe:
        pipe.delete(keys.job(job_id), keys.results(job_id), keys.events(job_id))  # a clean start
        for registry in (keys.failed(name), keys.canceled(name), keys.aborted(name)):
            pipe.zrem(registry, job_id)
        pipe.execute()
    return submit(task_type=task_type, data=state.input, client=client, limits=limits)
