"""The job service's ways to Redis: one client per process, a second one for blocking reads,
RQ's queue objects, and the Redis scripts.

The scripts (declared in `scripts`) are loaded into Redis on first use (EVALSHA, loaded again
after a Redis restart). The hot path's script runs on a connection of the calling thread's own
(`run_script`).

Name resolution is bounded by the socket timeout too (`BoundedResolver`), which the socket
options alone do not do: with the Redis container stopped, Docker's resolver takes 10 s to say
EAI_AGAIN, and redis-py retries a failed connect ten times.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading
import time
import types
from typing import Any

import django_rq
import hiredis
import redis
import redis.connection
from django.conf import settings

from factorize_app.tasks import task_types

# A clock older than this many seconds means nothing could reach Redis (or nothing ran): an outage
# (see `maintenance`; the scripts that tick the clock name it: jobs/scripts.py).
OUTAGE_GAP = 5


@functools.cache
def redis_connection() -> redis.Redis:
    """One connection pool per process, shared by every queue."""
    return django_rq.get_connection(task_types()[0].name)


@functools.cache
def rq_queue(name: str):
    return django_rq.get_queue(name, connection=redis_connection(), commit_mode="auto")


@functools.cache
def script(source: str):
    """The script registered with redis-py (EVALSHA, loaded on NOSCRIPT): call it with keys, args."""
    return redis_connection().register_script(source)


_thread = threading.local()


def run_script(source: str, keys: list[str], args: list[Any]) -> Any:
    """EVALSHA on a connection of this thread's own: the hot path's one round trip.

    redis-py's client wrapper (pool checkout and return, retries, instrumentation) costs more CPU
    than the round trip itself here (measured: 89 µs per call against 41 µs on a bare connection);
    a web thread keeps one connection and speaks to it directly. Any error drops the connection.
    """
    registered = script(source)
    for attempt in (1, 2):  # a connection broken since its last use (a Redis restart, a failover) is retried once
        connection = getattr(_thread, "connection", None)
        if connection is None:
            connection = redis_connection().connection_pool.make_connection()
            # Connect here: a Sentinel pool's connection asks the sentinels for the master in
            # connect(), which a first send_command would skip.
            connection.connect()
            _thread.connection = connection
        command = [hiredis.pack_command(("EVALSHA", registered.sha, str(len(keys)), *keys, *map(str, args)))]
        try:
            try:
                connection.send_packed_command(command)
                return connection.read_response()
            except redis.exceptions.NoScriptError:  # a restarted or flushed Redis: load it again
                connection.send_command("SCRIPT", "LOAD", source)
                connection.read_response()
                connection.send_packed_command(command)
                return connection.read_response()
        except BaseException as exc:
            _thread.connection = None
            connection.disconnect()
            if attempt == 2 or not isinstance(exc, redis.exceptions.ConnectionError):
                raise
    raise AssertionError("unreachable")


@functools.cache
def blocking_connection() -> redis.Redis:
    """A client whose socket timeout outlasts the longest wait, for the blocking reads."""
    client = redis_connection()
    pool = client.connection_pool
    timeout = settings.MAX_WAIT + settings.REDIS_SOCKET_TIMEOUT
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        # A Sentinel pool of its own, asking the same sentinels for the master on every connect, so
        # blocking reads follow a failover too (a copy of the kwargs would tie its connections to
        # the first pool's master lookup, which drops only that pool's idle connections on a move).
        return pool.sentinel_manager.master_for(
            pool.service_name, redis_class=type(client), socket_timeout=timeout, max_connections=pool.max_connections
        )
    kwargs = {**pool.connection_kwargs, "socket_timeout": timeout}
    blocking_pool = redis.ConnectionPool(
        connection_class=pool.connection_class, max_connections=pool.max_connections, **kwargs
    )
    return redis.Redis(connection_pool=blocking_pool)


class BoundedResolver:
    """getaddrinfo with a deadline, for redis-py's connections.

    Each lookup runs in a thread of its own; the caller waits at most REDIS_SOCKET_TIMEOUT for it.
    One lookup per name is under way at a time: callers asking while it runs join it, and once
    it has overrun the deadline they fail at once (rather than each wait again, and redis-py's
    retries with them), until it ends. No earlier answer stands in for a late one: the name of a
    stopped container resolves to nothing, and its old address would only cost a connect timeout.
    """

    def __init__(self, resolve=None) -> None:
        self._resolve = resolve  # the real getaddrinfo, looked up at call time when None
        self._lock = threading.Lock()
        self._running: dict[tuple, tuple[float, threading.Event, list]] = {}

    def getaddrinfo(self, host, port, *args, **kwargs):
        resolve = self._resolve or socket.getaddrinfo
        if not isinstance(host, str) or _is_address(host):
            return resolve(host, port, *args, **kwargs)
        request = (host, port, args, tuple(sorted(kwargs.items())))
        timeout = float(settings.REDIS_SOCKET_TIMEOUT)
        now = time.monotonic()
        with self._lock:
            running = self._running.get(request)
            if running is None:
                running = (now, threading.Event(), [])
                self._running[request] = running
                threading.Thread(
                    target=self._lookup, args=(request, running, resolve), name=f"resolve {host}", daemon=True
                ).start()
        started, done, outcome = running
        done.wait(max(0.0, started + timeout - now))
        if not outcome:
            raise socket.gaierror(socket.EAI_AGAIN, f"resolving {host} took more than {timeout:g} s")
        kind, value = outcome[0]
        if kind == "error":
            raise value
        return value

    def _lookup(self, request: tuple, running: tuple, resolve) -> None:
        host, port, args, kwargs = request
        try:
            answer = resolve(host, port, *args, **dict(kwargs))
            outcome = ("ok", answer)
        except OSError as exc:
            outcome = ("error", exc)
        with self._lock:
            self._running.pop(request, None)
        running[2].append(outcome)
        running[1].set()


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


def install_bounded_resolver() -> None:
    """Give redis-py's connection module (every client of ours, RQ's, django-rq's, the sentinels')
    a `socket` whose getaddrinfo is bounded; the rest is the socket module itself."""
    if isinstance(redis.connection.socket, _SocketWithBoundedResolver):
        return
    redis.connection.socket = _SocketWithBoundedResolver()


class _SocketWithBoundedResolver(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("socket")
        self.getaddrinfo = BoundedResolver().getaddrinfo

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)


install_bounded_resolver()
