"""What the fixtures of tests/conftest.py are made of, beside tests/processes.py: the environment
of a service subprocess, and the real `manage.py rqworker` processes, a test's own or warm ones
shared from test to test. Tests import most of these from tests.conftest, as before."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import redis
from django.conf import settings
from rq.worker import Worker
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from factorize_app.jobs import keys
from tests.processes import PYTHON, process_tree, registered, rqworker, stop, wait_until

# The service subprocesses' database (admin users, API keys, sessions): one SQLite file per test
# run, migrated once (service_database), as scripts/start-web.sh migrates before serving.
SERVICE_DATABASE = Path(tempfile.mkdtemp(prefix="factorize-tests-")) / "service.sqlite3"


def service_env(redis_url: str | None = None, **overrides: str) -> dict[str, str]:
    """The environment of a service subprocess; tests.settings reads its Redis from TEST_REDIS_URL."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}"  # the virtualenv's servers
    env["TEST_REDIS_URL"] = redis_url or settings.REDIS_URL
    env["DATABASE_URL"] = f"sqlite:///{SERVICE_DATABASE}"
    env.update(overrides)
    return env


class WorkerProcess:
    def __init__(self, process: subprocess.Popen, log_path: Path):
        self.process = process
        self.log_path = log_path
        self.log_offset = 0  # a warm worker's log, for the test that has it, starts where that test began

    @property
    def log(self) -> str:
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def end(self) -> None:
        """At the end of its test: stopped at once, its job (if any) too. A warm stop (SIGTERM) that
        waits for a job (a hard number runs for seconds) is cut short by a second, cold one."""
        for sig, grace in ((signal.SIGTERM, 1), (signal.SIGTERM, 5)):
            if self.process.poll() is None:
                self.process.send_signal(sig)
                try:
                    self.process.wait(grace)
                except subprocess.TimeoutExpired:
                    continue
        self.stop(signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        stop(self.process, sig, timeout)


def launch_worker(
    redis_conn: redis.Redis, log_path: Path, *queues: str, burst: bool = False, wait: bool = True, **env: str
) -> WorkerProcess:
    """A real `manage.py rqworker`; unless told not to wait, once it has registered (its setup done)."""
    process = rqworker(service_env(**env), *queues, burst=burst, log=log_path)
    worker = WorkerProcess(process, log_path)
    if wait and not burst:
        wait_until(lambda: registered(redis_conn, process), timeout=60, what="the worker to register")
        assert process.poll() is None, f"worker exited early:\n{worker.log}"
    return worker


class WarmWorkers:
    """The warm workers of a test run, one per set of queues and settings, started on first use.

    Before each test the database is flushed (clean_redis): a test that does not ask for warm
    workers gets none running; for one that does, each idle, live warm worker keeps its registration
    across the flush (its hash, and its place in the sets of workers, written back at once), and a
    busy or dead one is stopped, to start afresh when it is asked for again. Only the workers the
    test itself asks for run during it: asking for one stops the others."""

    def __init__(self, redis_conn: redis.Redis, directory: Path):
        self.redis_conn = redis_conn
        self.directory = directory
        self.running: dict[tuple, tuple[WorkerProcess, str]] = {}  # config -> (process, its RQ name)
        self.leased: set[tuple] = set()

    def lease(self, *queues: str, **env: str) -> WorkerProcess:
        config = (queues, tuple(sorted(env.items())))
        for other in [other for other in self.running if other != config and other not in self.leased]:
            self._drop(other)
        if config in self.running and self.running[config][0].process.poll() is not None:
            self._drop(config)
        if config not in self.running:
            worker = launch_worker(self.redis_conn, self.directory / f"warm-{len(self.leased)}-{id(config)}.log",
                                   *queues, **env)  # fmt: skip
            (name,) = [w.name for w in Worker.all(connection=self.redis_conn) if w.pid == worker.process.pid]
            self.running[config] = (worker, name)
        worker = self.running[config][0]
        worker.log_offset = worker.log_path.stat().st_size
        self.leased.add(config)
        return worker

    def _drop(self, config: tuple) -> None:
        worker, _ = self.running.pop(config)
        worker.process.kill()  # one process (a SimpleWorker): nothing of it outlives it
        worker.process.wait()

    def stop_all(self) -> None:
        for config in list(self.running):
            self._drop(config)

    def flush_keeping_idle_workers(self, keep: bool) -> None:
        """Flush the test database; when `keep`, the idle live warm workers (and the workers their
        processes started, as `rqworker` starts the webhooks one) stay registered through it."""
        self.leased.clear()
        kept_pids: set[int] = set()
        for config, (worker, name) in list(self.running.items()):
            state = self.redis_conn.hget(Worker.redis_worker_namespace_prefix + name, "state")
            if keep and worker.process.poll() is None and state == b"idle":
                kept_pids.update(process_tree(worker.process.pid))
            else:
                self._drop(config)
        kept = []
        for record in Worker.all(connection=self.redis_conn) if kept_pids else []:
            if record.pid in kept_pids:
                key = record.key
                kept.append((key, self.redis_conn.dump(key), self.redis_conn.pttl(key), record.queue_names()))
        # The deployment's job id key too: the warm workers name and read jobs with the one they
        # cached, which a flush would replace with another process's new one.
        id_key = self.redis_conn.get(keys.JOB_ID_KEY) if kept else None
        self.redis_conn.flushdb()
        with self.redis_conn.pipeline() as pipe:
            if id_key is not None:
                pipe.set(keys.JOB_ID_KEY, id_key)
            for key, dumped, ttl, queues in kept:
                pipe.restore(key, max(ttl, 0), dumped, replace=True)  # a heartbeat may have written it since
                pipe.sadd(REDIS_WORKER_KEYS, key)
                for queue in queues:
                    pipe.sadd(WORKERS_BY_QUEUE_KEY % queue, key)
            pipe.execute()
