"""Whether the Redis servers answer: the ping, the readiness probe (of the home Redis, and of the
task types' own ones: TASK_REDIS_URLS), and the types whose own Redis is out of reach."""

from __future__ import annotations

import concurrent.futures
import functools
import threading
import time

import redis

from factorize_app.jobs import keys
from factorize_app.jobs.connection import HOME, redis_connection, server_connection, servers
from factorize_app.jobs.errors import FULL, QueueUnavailable, translate_outages, write_refusal
from factorize_app.jobs.monitoring import memory_admits


def ping() -> None:
    """Raise QueueUnavailable unless Redis answers."""
    translate_outages(redis_connection().ping)()


_probe_lock = threading.Lock()
_probe_futures: dict[str, concurrent.futures.Future] = {}


def probe(*, timeout: float, server: str = HOME) -> str | None:
    """For /readyz, within `timeout` seconds whatever the socket timeout or a slow name lookup:
    None if Redis takes writes and admits new jobs, else the refusal (FULL, READ_ONLY,
    PERSISTENCE); QueueUnavailable if Redis does not answer in time.

    The check runs in a thread of its own; while one hangs (a name that does not resolve, a hung
    Redis), later probes wait on it instead of piling up more threads.
    """
    return _probe_result(_start_probe(server), timeout)


def probe_task_servers(*, timeout: float) -> dict[str, str]:
    """For /readyz: each task type whose own Redis (TASK_REDIS_URLS) does not answer within
    `timeout` seconds, or refuses writes, and why; probed at once, side by side."""
    started = {server: _start_probe(server) for server in servers() if server != HOME}
    deadline = time.monotonic() + timeout
    found = {}
    for server, future in started.items():
        try:
            reason = _probe_result(future, max(0.0, deadline - time.monotonic()))
        except QueueUnavailable as exc:
            reason = str(exc)
        if reason is not None:
            found.update((name, reason) for name in servers()[server])
    return found


def _start_probe(server: str) -> concurrent.futures.Future:
    with _probe_lock:
        future = _probe_futures.get(server)
        if future is None or future.done():
            future = _probe_futures[server] = _probe_executor().submit(_probe_once, server)
        return future


def _probe_result(future: concurrent.futures.Future, timeout: float) -> str | None:
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        raise QueueUnavailable(f"the job queue is unavailable: Redis did not answer within {timeout:g} s") from None


@functools.cache
def _probe_executor() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=len(servers()), thread_name_prefix="redis-probe")


@translate_outages
def _probe_once(server: str = HOME) -> str | None:
    try:
        server_connection(server).set(keys.PROBE, "1", px=60_000)  # a write: refused exactly when submits would be
    except redis.exceptions.ResponseError as exc:
        reason = write_refusal(exc)
        if reason is None:
            raise
        return reason
    return None if memory_admits(server=server)[0] else FULL


def unreachable_types() -> frozenset[str]:
    """The task types whose own Redis (TASK_REDIS_URLS) does not answer a PING now: what /metrics
    leaves out (and reports as down) rather than fail whole."""
    down: set[str] = set()
    for server, names in servers().items():
        if server == HOME:
            continue
        try:
            server_connection(server).ping()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            down.update(names)
    return frozenset(down)
