"""The job service's ways to Redis: one client per process and server, a second one for blocking
reads, RQ's queue objects, and the Redis scripts.

A task type's jobs may live on a Redis of their own (TASK_REDIS_URLS; docs/type-redis.md): a
*server* is named HOME (REDIS_URL: clients, files, webhooks, the job id key) or by its URL. Every
key of a type's jobs and queues is on its server (`redis_for`, `redis_for_job`, `server_of`);
`redis_connection()` is the home Redis.

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
from urllib.parse import urlsplit

import django_rq
import django_rq.connection_utils
import hiredis
import redis
import redis.connection
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from factorize_app.tasks import task_types

# A clock older than this many seconds means nothing could reach Redis (or nothing ran): an outage
# (see `maintenance`; the scripts that tick the clock name it: jobs/scripts.py).
OUTAGE_GAP = 5


HOME = "home"  # the server of REDIS_URL (or REDIS_SENTINELS): every type not in TASK_REDIS_URLS


def server_of(type_name: str) -> str:
    """The server a type's jobs and queues live on: HOME, or its URL in TASK_REDIS_URLS."""
    return settings.TASK_REDIS_URLS.get(type_name, HOME)


def server_of_job(job_id: str) -> str:
    """The server of a job, by the type its id names (`<type>-<hex>`; an unknown type: HOME)."""
    return server_of(job_id.rpartition("-")[0])


def types_on(server: str) -> list:
    """The task types whose jobs and queues live on a server."""
    return [task_type for task_type in task_types() if server_of(task_type.name) == server]


def servers() -> dict[str, list[str]]:
    """Every server, HOME first, and the task types whose jobs live on it."""
    found: dict[str, list[str]] = {HOME: []}
    for task_type in task_types():
        found.setdefault(server_of(task_type.name), []).append(task_type.name)
    return found


def describe_server(server: str) -> str:
    """A server as an error names it: REDIS_URL, or its URL without credentials."""
    if server == HOME:
        return "the home Redis (REDIS_URL)"
    parts = urlsplit(server)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path} (TASK_REDIS_URLS)"


def server_named_in(text: str) -> str | None:
    """The server whose host:port an error's text names (redis-py's connection errors do)."""
    for server in servers():
        kwargs = server_connection(server).connection_pool.connection_kwargs
        if "host" in kwargs and f"{kwargs['host']}:{kwargs.get('port', 6379)}" in text:
            return server
    return None


@functools.cache
def server_connection(server: str) -> redis.Redis:
    """One connection pool per process and server."""
    names = servers()[server]
    if names:  # django-rq's connection of a queue there (RQ_QUEUES, as its dashboard connects)
        return django_rq.get_connection(names[0])
    return django_rq.connection_utils.get_redis_connection(settings.RQ_CONNECTION)  # no type at home


def redis_connection() -> redis.Redis:
    """The home Redis: clients, files, webhooks, the job id key (not a type's jobs: `redis_for`)."""
    return server_connection(HOME)


def redis_for(type_name: str) -> redis.Redis:
    """The Redis holding a type's jobs and queues."""
    return server_connection(server_of(type_name))


def redis_for_job(job_id: str) -> redis.Redis:
    """The Redis holding a job (its id names its type)."""
    return server_connection(server_of_job(job_id))


def one_server(type_names: list[str]) -> str:
    """The one server of these types' queues; ImproperlyConfigured when they are on several (a
    worker takes from its queues in one script, on one Redis)."""
    found = {name: server_of(name) for name in type_names}
    if len(set(found.values())) > 1:
        where = "; ".join(f"{name} on {describe_server(server)}" for name, server in found.items())
        raise ImproperlyConfigured(
            f"a worker serves the queues of one Redis, and TASK_REDIS_URLS puts these on several ({where}): "
            "start one worker per Redis"
        )
    return next(iter(found.values()), HOME)


_worker = {"server": HOME}


def serve_queues(type_names: list[str]) -> str:
    """Make this process a worker of these types' server (`worker_server`): checked, one_server."""
    _worker["server"] = one_server(type_names)
    return _worker["server"]


def worker_server() -> str:
    """The server of this worker process's queues (HOME in a web process)."""
    return _worker["server"]


def worker_redis() -> redis.Redis:
    return server_connection(worker_server())


@functools.cache
def rq_queue(name: str):
    return django_rq.get_queue(name, connection=redis_for(name), commit_mode="auto")


@functools.cache
def script(source: str, server: str = HOME):
    """The script registered with redis-py (EVALSHA, loaded on NOSCRIPT): call it with keys, args."""
    return server_connection(server).register_script(source)


_thread = threading.local()


def run_script(source: str, keys: list[str], args: list[Any], *, server: str = HOME) -> Any:
    """EVALSHA on a connection of this thread's own: the hot path's one round trip.

    redis-py's client wrapper (pool checkout and return, retries, instrumentation) costs more CPU
    than the round trip itself here (measured: 89 µs per call against 41 µs on a bare connection);
    a web thread keeps one connection per server and speaks to it directly. Any error drops the connection.
    """
    sha = script(source, server).sha
    for attempt in (1, 2):  # a connection broken since its last use (a Redis restart, a failover) is retried once
        connection = _thread_connection(server)
        command = [hiredis.pack_command(("EVALSHA", sha, str(len(keys)), *keys, *map(str, args)))]
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
            _thread.connections.pop(server, None)
            connection.disconnect()
            if attempt == 2 or not isinstance(exc, redis.exceptions.ConnectionError):
                raise
    raise AssertionError("unreachable")


def run_scripts(calls: list[tuple[str, str, list[str], list[Any]]]) -> list[Any]:
    """Each (server, source, keys, args) on this thread's connection to its server (one call per
    server), sent together and then read: one round trip of latency for them all."""
    for attempt in (1, 2):  # a connection broken since its last use (a Redis restart, a failover) is retried once
        used = []
        try:
            for server, source, keys, args in calls:
                connection = _thread_connection(server)
                used.append(connection)
                sha = script(source, server).sha
                connection.send_packed_command(
                    [hiredis.pack_command(("EVALSHA", sha, str(len(keys)), *keys, *map(str, args)))]
                )
            replies = []
            for connection, (_, source, keys, args) in zip(used, calls, strict=True):
                try:
                    replies.append(connection.read_response())
                except redis.exceptions.NoScriptError:  # a restarted or flushed Redis: load it again
                    connection.send_command("SCRIPT", "LOAD", source)
                    sha = connection.read_response()
                    connection.send_command("EVALSHA", sha, len(keys), *keys, *args)
                    replies.append(connection.read_response())
            return replies
        except BaseException as exc:
            for server, *_ in calls:
                connection = getattr(_thread, "connections", {}).pop(server, None)
                if connection is not None:
                    connection.disconnect()
            if attempt == 2 or not isinstance(exc, redis.exceptions.ConnectionError):
                raise
    raise AssertionError("unreachable")


def _thread_connection(server: str):
    connections = getattr(_thread, "connections", None)
    if connections is None:
        connections = _thread.connections = {}
    connection = connections.get(server)
    if connection is None:
        connection = server_connection(server).connection_pool.make_connection()
        # Connect here: a Sentinel pool's connection asks the sentinels for the master in
        # connect(), which a first send_command would skip.
        connection.connect()
        connections[server] = connection
    return connection


@functools.cache
def blocking_connection(server: str = HOME) -> redis.Redis:
    """A client whose socket timeout outlasts the longest wait, for the blocking reads."""
    client = server_connection(server)
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
