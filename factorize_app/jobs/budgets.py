"""Each client's budget of Redis memory: the bytes its jobs' records may hold at once.

Without one, one client at the default submit rate filled 90% of a 256 MB Redis in about five
minutes (3,000 results took 7-11 KB each), and then every client's new jobs were refused for up
to RESULT_TTL. So each new job a client submits is charged what its records will hold
(`job_bytes`: REDIS_JOB_BYTES for the job hash, its registries, owners, events and result, plus
its input twice, as the job hash and the queue's input table keep it), for as long as they may
live (`lifetime`: its wait, its run and its kept outcome); a submit whose new jobs would take the
client past its budget is refused (BudgetExceeded, a 429 naming REDIS_CLIENT_SHARE), while
polls of jobs it already has still answer.

Redis tells no one when a key expires, so the charge is not taken back job by job: it sits in
one counter per client and *expiry slot* (a time bucket of `slot_seconds`, about a 32nd of the
longest lifetime), and each counter expires, with the EXPIRE of Redis itself, once every job
charged to it has expired. What a client holds is the sum of its live counters: at most ~34 GETs
in one script, which also adds the charge. A job cancelled or finished early stays charged until
its slot expires: the budget errs towards refusing.

The budget: REDIS_CLIENT_BYTES if set, else REDIS_CLIENT_SHARE of Redis's maxmemory; with
neither (no maxmemory), no budget. An API key may have its own (`limits.redis_bytes`).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from django.conf import settings

from factorize_app.jobs import keys, scripts
from factorize_app.jobs.connection import HOME, server_connection, server_of, servers
from factorize_app.jobs.errors import ClientLimitExceeded
from factorize_app.jobs.monitoring import redis_memory
from factorize_app.tasks import TaskType, task_types

SLOTS = 32  # expiry slots across the longest lifetime: the finer, the sooner room comes back
LIMIT_NAME = "REDIS_CLIENT_SHARE"


class BudgetExceeded(ClientLimitExceeded):
    """A submit's new jobs would take the client past its budget of Redis memory."""

    def __init__(self, *, budget: int, held: int, charge: int, jobs: int, retry_after: int) -> None:
        Exception.__init__(
            self,
            f"over {LIMIT_NAME}: this client's jobs may hold at most {budget} bytes of the job queue's "
            f"memory; they hold {held}, and {jobs} new job{'s' if jobs != 1 else ''} would add {charge}. "
            "Room comes back as their results expire (RESULT_TTL)",
        )
        self.limit, self.cap = LIMIT_NAME, budget
        self.retry_after = retry_after
        self.details = {"held": held, "needed": charge}  # bytes, beside the budget (`max`)


def client_budget(own: int | None = None, server: str = HOME) -> int:
    """A client's budget in bytes (0: none) on a server (each holds its own types' jobs): its own
    (an API key's), REDIS_CLIENT_BYTES, else REDIS_CLIENT_SHARE of that server's maxmemory."""
    if own is not None:
        return own
    if settings.REDIS_CLIENT_BYTES > 0:
        return settings.REDIS_CLIENT_BYTES
    _, maxmemory = redis_memory(server)
    return int(settings.REDIS_CLIENT_SHARE * maxmemory) if maxmemory and settings.REDIS_CLIENT_SHARE > 0 else 0


def job_bytes(data: dict[str, Any]) -> int:
    """What a job's records take in Redis, estimated at its submit: REDIS_JOB_BYTES and its input twice."""
    return settings.REDIS_JOB_BYTES + 2 * len(json.dumps(data, separators=(",", ":")))


def lifetime(task_type: TaskType) -> int:
    """Longest a job's records live: its wait in the queue, its run and its kept outcome."""
    kept = max(task_type.setting("result_ttl"), task_type.setting("failure_ttl"))
    return task_type.setting("job_ttl") + task_type.setting("job_timeout") + kept


def slot_seconds() -> int:
    return max(1, math.ceil(max(lifetime(task_type) for task_type in task_types()) / SLOTS))


def charge(*, task_type: TaskType, client: str, new_inputs: list[dict[str, Any]], budget: int | None = None) -> None:
    """Charge `client` for the new jobs of `new_inputs`, or raise BudgetExceeded (nothing charged)."""
    server = server_of(task_type.name)
    budget = client_budget(budget, server)
    if budget <= 0 or not new_inputs:
        return
    width = slot_seconds()
    now = time.time()
    first = int(now // width)
    last = first + SLOTS + 2  # the furthest any job's records reach, rounded up
    target = math.ceil((now + lifetime(task_type)) / width)  # charged until every record has expired
    owner = client or "anonymous"
    slot_keys = [keys.budget(owner, slot) for slot in range(first, last + 1)]
    amount = sum(job_bytes(data) for data in new_inputs)
    reply = scripts.BUDGET.on_thread(
        server=server, slots=slot_keys, charge=amount, budget=budget, target=target - first + 1, expires=target * width
    )
    if int(reply[0]) == 1:
        return
    held, earliest = int(reply[1]), int(reply[2])
    retry_after = max(1, math.ceil((first + earliest - 1) * width - now)) if earliest else 1
    raise BudgetExceeded(budget=budget, held=held, charge=amount, jobs=len(new_inputs), retry_after=retry_after)


def held(*, client: str) -> int:
    """Bytes charged to the client's jobs that may still be in Redis (on every server)."""
    width = slot_seconds()
    first = int(time.time() // width)
    slot_keys = [keys.budget(client or "anonymous", slot) for slot in range(first, first + SLOTS + 3)]
    return sum(int(value or 0) for server in servers() for value in server_connection(server).mget(slot_keys))
