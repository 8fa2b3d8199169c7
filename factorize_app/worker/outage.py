"""Redis outages and write refusals (a full Redis, a read-only replica, failed persistence),
ridden out alike by both workers: wait with backoff, say so in one line when the trouble starts
and one when it ends (not one per retry), and keep what is not yet recorded until Redis takes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis

from factorize_app import jobs

logger = logging.getLogger("factorize_app.worker")

# Wait this long before the first retry, doubling up to the cap.
RETRY_FIRST, RETRY_CAP = 0.5, 30.0
# A write refusal is looked at more often: results waiting to be recorded should be recorded
# within a few seconds of Redis taking writes again, well inside their lease.
REFUSAL_RETRY_CAP = 5.0


class Trouble:
    """Logs the state changes of the job queue as one worker sees it: one line when it becomes
    unavailable (or changes how), one when it serves again; the waits in between say nothing."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.current: str | None = None
        self.retry_in = RETRY_FIRST

    def failed(self, error: jobs.QueueUnavailable) -> float:
        """Note a failure; answers how long to wait before the next try."""
        state = error.reason if isinstance(error, jobs.QueueRefusesWrites) else "unavailable"
        if state != self.current:
            logger.error(f"{self.what}: {describe(error)}; waiting", extra={"queue_state": state})
            self.current = state
        wait = self.retry_in
        cap = REFUSAL_RETRY_CAP if isinstance(error, jobs.QueueRefusesWrites) else RETRY_CAP
        self.retry_in = min(self.retry_in * 2, cap)
        return min(wait, cap)

    def ok(self) -> None:
        if self.current is not None:
            logger.info(f"{self.what}: the job queue serves again", extra={"queue_state": "ok"})
        self.current, self.retry_in = None, RETRY_FIRST


def describe(error: jobs.QueueUnavailable) -> str:
    if isinstance(error, jobs.QueueRefusesWrites):
        return f"Redis refuses writes ({error.reason}): {error}"
    return str(error)


def as_queue_error(exc: BaseException) -> jobs.QueueUnavailable | None:
    """The job service's name for an outage or a refusal (RQ's own calls raise redis-py's errors);
    None for anything else, which is a bug to raise, not to wait out."""
    return jobs.queue_error(exc) if isinstance(exc, (jobs.QueueUnavailable, redis.exceptions.RedisError)) else None


def retrying(action: Callable[[], object], what: str) -> None:
    """Run `action` until Redis takes it: results computed are kept in memory across an outage or
    a write refusal, never thrown away."""
    trouble = Trouble(what)
    while True:
        try:
            action()
            trouble.ok()
            return
        except jobs.QueueUnavailable as exc:
            time.sleep(trouble.failed(exc))
