"""What every scenario is given: the run's options, the bench's Redis, the service's environment
as in production, and the ways to start the service's processes and the peers' (the processes'
helpers are the tests', tests/processes.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from bench.task_types import COUNTER
from tests import processes
from tests.processes import ROOT, wait_until

BIN = Path(sys.executable).parent
TASK_TYPES = ",".join(
    [
        "factorize_app.tasks.factorization.TASK_TYPE",
        "factorize_app.tasks.primes.TASK_TYPE",
        "factorize_app.tasks.digits.TASK_TYPE",
        "bench.task_types.INCR",
        "bench.task_types.NAP",
        "bench.task_types.DIGITS_ONE_BY_ONE",
    ]
)
DATABASE = ROOT / ".run" / "bench.sqlite3"


def service_env(redis_url: str) -> dict[str, str]:
    """The environment of the service's processes and the peers' on `redis_url`."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "REDIS_URL": redis_url,
        "TASK_TYPES": TASK_TYPES,
        "JOB_TTL": "900",  # the scale scenario queues 100,000 jobs before it measures
        "LOG_LEVEL": "WARNING",
        # Every request comes from 127.0.0.1: rates high enough never to bite, but still counted.
        "THROTTLE_SUBMIT": "1000000/second",
        "THROTTLE_POLL": "1000000/second",
        # The scenarios queue up to 100,000 jobs of one client: no cap on a client's queued jobs.
        "MAX_QUEUED_PER_CLIENT": "0",
        # The clients' API keys (fairness, the hot path with a key) live in the bench's own database.
        "DATABASE_URL": f"sqlite:///{DATABASE}",
    }


@dataclasses.dataclass(frozen=True)
class Options:
    """The command line's sizes; `fraction` scales every count (`--fraction 0.02`: a quick run that
    only proves each scenario runs)."""

    runs: int = 3
    seconds: int = 8
    jobs: int = 10_000
    e2e: int = 5_000
    deep: int = 100_000
    fraction: float = 1.0
    processes: tuple[int, ...] = ()  # the scaling scenario's process counts; () = 1, 2, 4, 8 as the cores allow

    def size(self, count: int, least: int = 1) -> int:
        return max(least, round(count * self.fraction))


@dataclasses.dataclass
class Bench:
    """One Redis (its database flushed by `flush`, never another) and the processes on it."""

    options: Options
    redis_url: str

    @functools.cached_property
    def conn(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    @functools.cached_property
    def env(self) -> dict[str, str]:
        return service_env(self.redis_url)

    def on(self, redis_url: str) -> Bench:
        """The same bench on another Redis (a server of a scenario's own)."""
        return Bench(self.options, redis_url)

    def flush(self) -> None:
        self.conn.flushdb()

    def counter(self) -> int:
        """The trivial jobs run so far (each one INCR of the counter: ours and the peers')."""
        return int(self.conn.get(COUNTER) or 0)

    def wait_for_counter(self, count: int, timeout: float = 600) -> None:
        wait_until(lambda: self.counter() >= count, timeout, 0.02, f"{count} jobs to drain")

    @contextlib.contextmanager
    def web_server(self, **env: str) -> Iterator[str]:
        """scripts/serve.sh as shipped (its workers stopped with it), yielded as its base URL."""
        with processes.web_server_with({**self.env, **env}, group=True) as url:
            yield url

    @contextlib.contextmanager
    def running(self, args: list[str], ready: Callable[[], bool] | None = None, **env: str) -> Iterator[None]:
        """A peer's server or any command, in its own process group, once `ready()`."""
        with processes.running(args, {**self.env, **env}, ready, group=True):
            yield

    def spawn(self, args: list[str], **env: str) -> subprocess.Popen:
        """A peer's worker command, stopped with `stop`."""
        return subprocess.Popen(
            args, cwd=ROOT, env={**self.env, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def workers(self, count: int, *queues: str, burst: bool = True, **env: str) -> list[subprocess.Popen]:
        """`count` real `manage.py rqworker` processes (burst: they exit once their queues are empty)."""
        return [processes.rqworker({**self.env, **env}, *queues, burst=burst) for _ in range(count)]

    def warm_worker(self, queue: str, timeout: float = 120, **env: str) -> list[subprocess.Popen]:
        """One worker for `queue`, returned once it has registered (its model loaded)."""
        from factorize_app.jobs import keys

        procs = self.workers(1, queue, burst=False, **env)
        wait_until(lambda: int(self.conn.scard(keys.workers_of(queue))) >= 1, timeout, 0.02, f"the {queue} worker")
        return procs

    @staticmethod
    def finish(procs: list[subprocess.Popen]) -> None:
        """Wait for burst workers to empty their queues and exit."""
        for process in procs:
            process.wait(600)

    @staticmethod
    def stop(procs: list[subprocess.Popen]) -> None:
        for process in procs:
            if process.poll() is None:
                process.terminate()
        for process in procs:
            processes.stop(process, timeout=60)


def django_setup(bench: Bench) -> None:
    """Django in this process on the bench's Redis (the scenarios submit jobs in-process too)."""
    os.environ.update({k: v for k, v in bench.env.items() if k != "PATH"})
    sys.path.insert(0, str(ROOT))
    DATABASE.parent.mkdir(exist_ok=True)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def api_key(name: str) -> dict[str, str]:
    """The Authorization header of a new API key (invented tokens are refused: a client is a key)."""
    from factorize_app.models import ApiKey

    return {"Authorization": f"Bearer {ApiKey.create_key(name=name)[1]}"}
