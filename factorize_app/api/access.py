"""What a client may see of others' jobs, and its caps: one rule for the DRF views and the lean lane."""

from __future__ import annotations

from typing import Any

from factorize_app import jobs
from factorize_app.api.authentication import ClientIdentity


def reading_owner(identity: ClientIdentity) -> str:
    """Whose job a read by id must be: with an API key (or a login), the caller's own; anonymous
    clients (known only by address, as in the seed) and staff read any job (ids are unguessable)."""
    if identity.staff or (identity.key_id is None and not identity.name.startswith("user-")):
        return ""
    return identity.name


def limits_of(identity: ClientIdentity) -> jobs.ClientLimits:
    """The client's caps: its key's own, else the settings' (None)."""
    return jobs.ClientLimits(
        max_queued=identity.max_queued, max_running=identity.max_running, redis_bytes=identity.max_redis_bytes
    )


def add_traceback(body: dict[str, Any], state: jobs.JobState, identity: ClientIdentity) -> dict[str, Any]:
    """A failed job's full traceback (`traceback`; `error` is its last line), for staff and for its
    owner known by an API key or a login (whose read was checked against ownership), never for an
    anonymous client: a traceback names the worker's files and a model's internals."""
    if state.status == jobs.FAILED and state.job_id and (identity.staff or reading_owner(identity)):
        body["traceback"] = jobs.failure_traceback(job_id=state.job_id)
    return body
