"""Ending this process's waits at once, when its web server is stopping.

A long poll (`Prefer: wait`, a waiting submit) blocks in one XREAD on its jobs' result streams,
and an event stream waits on its dispatcher's watch; either can last a minute. A server that is
stopping (a rolling upgrade) cannot wait that long, nor cut them off: `release_waits()` makes
every wait of the process return now, and every later one return at once, so each answers with
the job's current state and its client polls again (on another server).

The blocked XREADs return through a wake-up stream of the process's own, which each wait reads
from its start ("0-0"): one entry there, written once, wakes them all, including a wait that
starts after it, with nothing to poll while no server stops.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import uuid

import redis

from factorize_app.jobs import keys
from factorize_app.jobs.connection import server_connection, servers
from factorize_app.jobs.events import release_dispatchers

logger = logging.getLogger("factorize_app.jobs")

_RELEASED = threading.Event()
# Long enough to outlast every wait of a stopping server (they end at once; this is for safety).
WAKE_TTL = 600


def released() -> bool:
    """Whether this process's waits have been released (its server is stopping)."""
    return _RELEASED.is_set()


def wake_key() -> str:
    """The key of this process's wake-up stream (for the XREAD of each wait)."""
    return _wake_key(os.getpid())


@functools.cache
def _wake_key(pid: int) -> str:
    return keys.events_wake(f"release-{uuid.uuid4().hex}")  # per process: a forked child has its own


def release_waits() -> None:
    """End every wait of this process now, and every later one at once."""
    _RELEASED.set()
    release_dispatchers()
    for server in servers():  # a long poll blocks on its type's server
        try:
            with server_connection(server).pipeline(transaction=False) as pipe:
                pipe.xadd(wake_key(), {"released": 1}, maxlen=1)
                pipe.expire(wake_key(), WAKE_TTL)
                pipe.execute()
        except redis.exceptions.RedisError as exc:
            # Redis refuses writes or is down: a blocked poll ends at its own deadline instead (at
            # most MAX_WAIT), or with the outage.
            logger.warning("cannot wake the long polls through Redis", extra={"error": str(exc)})
