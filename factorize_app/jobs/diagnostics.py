"""What went wrong, kept for the people who fix it: workers whose model setup failed (shown in
/queues and /readyz, so a broken model is not just a traceback in a log while its jobs wait
forever), and a failed job's full traceback (its poll shows one line).

A type's setup failure is one field of one hash (bounded by the number of task types); a later
successful setup of that type clears it.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from rq.exceptions import NoSuchJobError
from rq.job import Job

from factorize_app.jobs import keys
from factorize_app.jobs.connection import redis_connection, redis_for_job
from factorize_app.jobs.errors import translate_outages

# The most characters of a traceback kept (its end: where it was raised).
TRACEBACK_MAX = 20_000
ERROR_MAX = 500
# A failure reported while its workers keep failing: they retry within a minute under `make run`'s
# back-off, and within five under Kubernetes' CrashLoopBackOff.
SETUP_FAILURE_STALE = 600


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@translate_outages
def record_setup_failure(*, task_name: str, error: str, traceback: str = "") -> dict[str, Any]:
    """Record that a worker of `task_name` could not set its model up (it exits and is started
    again): the error in one line, the traceback, since when it fails, and how often it has."""
    client = redis_connection()
    previous = client.hget(keys.SETUP_FAILURES, task_name)
    earlier = json.loads(previous) if previous else {}
    now = _now()
    failure = {
        "error": error.strip().splitlines()[-1][:ERROR_MAX] if error.strip() else "the setup failed",
        "since": earlier.get("since", now),
        "last": now,
        "restarts": int(earlier.get("restarts", 0)) + 1,
        "traceback": traceback[-TRACEBACK_MAX:],
    }
    client.hset(keys.SETUP_FAILURES, task_name, json.dumps(failure))
    return failure


@translate_outages
def clear_setup_failures(*, task_names: list[str]) -> None:
    """The types' setups succeeded: they are no longer reported as failing."""
    if task_names:
        redis_connection().hdel(keys.SETUP_FAILURES, *task_names)


@translate_outages
def setup_failures() -> dict[str, dict[str, Any]]:
    """Task type name -> its setup failure ({"error", "since", "last", "restarts", "traceback"}),
    while it repeats: one not repeated within SETUP_FAILURE_STALE seconds is left out (no worker
    of the type is trying any more; /queues shows it has none)."""
    cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=SETUP_FAILURE_STALE)
    failures = {}
    for name, value in redis_connection().hgetall(keys.SETUP_FAILURES).items():
        failure = json.loads(value)
        if datetime.datetime.fromisoformat(failure["last"]) >= cutoff:
            failures[name.decode()] = failure
    return failures


@translate_outages
def failure_traceback(*, job_id: str) -> str | None:
    """A failed job's full traceback as its worker recorded it (the poll's `error` is its last
    line); None when there is none (not failed, or gone)."""
    try:
        job = Job.fetch(job_id, connection=redis_for_job(job_id))
    except NoSuchJobError:
        return None
    latest = job.latest_result()
    if latest is None or not latest.exc_string:
        return None
    return latest.exc_string[-TRACEBACK_MAX:]


def setup_error(failure: dict[str, Any] | None) -> dict[str, Any] | None:
    """What /queues and /readyz tell anyone of a setup failure: no traceback (it names files)."""
    if failure is None:
        return None
    return {name: failure.get(name) for name in ("error", "since", "last", "restarts")}
