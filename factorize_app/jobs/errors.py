"""What can go wrong, in the job service's own terms: callers never need to know Redis.

A Redis that does not answer is an outage (QueueUnavailable). A Redis that is full (`noeviction`
at `maxmemory`), a read-only replica or one whose persistence failed (MISCONF) still answers
reads; its refusals become QueueRefusesWrites, naming the reason (see `write_refusal`). Every
public function of the package translates Redis errors so (`translate_outages`).
"""

from __future__ import annotations

import functools

import redis

# Reasons Redis refuses writes while still answering reads.
FULL, READ_ONLY, PERSISTENCE = "full", "read-only", "persistence"
REFUSAL_DETAILS = {
    FULL: "the job queue is full; try again later",
    READ_ONLY: "the job queue is read-only (its Redis is a replica, as during a failover); try again later",
    PERSISTENCE: "the job queue cannot save to disk, so it refuses changes; try again later",
}


class QueueUnavailable(Exception):
    """Redis did not answer; the caller should report an outage, not a bug. `server`: the setting
    naming the Redis that failed (REDIS_URL or TASK_REDIS_URLS, not its address: a client reads
    it), when there are several; `task_types`: whose jobs it holds."""

    server: str | None = None
    task_types: tuple[str, ...] = ()


class QueueRefusesWrites(QueueUnavailable):
    """Redis answers but refuses writes: `reason` is FULL, READ_ONLY or PERSISTENCE."""

    def __init__(self, reason: str, cause: str = ""):
        super().__init__(REFUSAL_DETAILS[reason] + (f" ({cause})" if cause else ""))
        self.reason = reason
        self.detail = REFUSAL_DETAILS[reason]


class SubmitRefused(QueueRefusesWrites):
    """A submit of new jobs refused: by Redis itself, or by the high-water mark of its memory."""


class JobNotFound(LookupError):
    pass


class JobNotRetryable(Exception):
    def __init__(self, status: str):
        super().__init__(f"only failed, canceled or aborted jobs can be retried; this job is {status}")
        self.status = status


class JobNotCancellable(Exception):
    def __init__(self, status: str):
        super().__init__(f"only queued or running jobs can be cancelled; this job is {status}")
        self.status = status


class Throttled(Exception):
    """The client used up its request allowance for the current window."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many requests; retry in {retry_after} s")
        self.retry_after = retry_after


class ClientLimitExceeded(Exception):
    """A submit would take the client past one of its caps (`limit` names the setting)."""

    def __init__(self, limit: str, cap: int):
        super().__init__(f"over {limit}: at most {cap} jobs of this type per client; wait for some to finish")
        self.limit, self.cap = limit, cap


def write_refusal(exc: BaseException) -> str | None:
    """The reason a Redis error refuses a write (FULL, READ_ONLY, PERSISTENCE), or None.

    redis-py raises OOM and READONLY replies (also from inside a transaction, whose first error
    it raises instead of EXECABORT, and from a script) as their own classes; MISCONF arrives as a
    plain ResponseError whose text names it.
    """
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return FULL
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return READ_ONLY
    if isinstance(exc, redis.exceptions.ResponseError):
        text = str(exc)
        if "MISCONF" in text:
            return PERSISTENCE
        if "OOM command not allowed" in text:
            return FULL
        if "READONLY" in text or "master -> replica" in text:
            # The second: a blocking read (BLPOP, XREAD) that Redis ends as it turns into a replica.
            return READ_ONLY
    return None


def queue_error(exc: BaseException) -> QueueUnavailable | None:
    """The job service's view of a Redis error: an outage, a write refusal, or None (a bug)."""
    if isinstance(exc, QueueUnavailable):
        return exc
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        outage = QueueUnavailable(f"the job queue is unavailable: {exc}")
        _name_server(outage, str(exc))
        return outage
    reason = write_refusal(exc)
    return QueueRefusesWrites(reason, str(exc)) if reason else None


def translate_outages(func):
    """Report Redis outages as QueueUnavailable, so callers need not know Redis."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except QueueUnavailable:
            raise
        except redis.exceptions.RedisError as exc:
            translated = queue_error(exc)
            if translated is None:
                raise
            raise translated from exc

    return wrapper


def _name_server(outage: QueueUnavailable, text: str) -> None:
    """With task types on Redis servers of their own (TASK_REDIS_URLS), name the one that failed
    (redis-py's error names its host and port) and the types it holds."""
    from factorize_app.jobs.connection import HOME, server_named_in, servers

    found = servers()
    if len(found) < 2:
        return
    server = server_named_in(text)
    if server is not None:
        outage.server = "REDIS_URL" if server == HOME else "TASK_REDIS_URLS"
        outage.task_types = tuple(found[server])
