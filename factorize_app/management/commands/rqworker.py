"""django-rq's `rqworker`, except that naming no queue means every task type whose
implementation can run here (and the webhooks worker beside them, in a child process), a named
type that cannot is refused in one line, `rqworker webhooks` runs the webhooks worker, and a
model worker runs under a watchdog process that kills it when its loop stalls (factorize_app.watchdog)."""

import logging
import os
import subprocess
import sys
import threading

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django_rq.management.commands import rqworker

from factorize_app import jobs, watchdog
from factorize_app.apps import warn_about_insecure_settings
from factorize_app.tasks import ImplementationUnavailable, UnknownTaskType, get_task_type, task_types
from factorize_app.webhooks import worker as webhooks_worker

logger = logging.getLogger("factorize_app.worker")


class Command(rqworker.Command):
    help = (
        "Runs RQ workers on the named queues; with none named, on every task type's queue whose "
        "requirements are installed here."
    )
    # A worker needs no URL, template or admin checks (`manage.py check` runs them where the web
    # is deployed): they would import every view into the worker, a third of its start-up.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--watchdog",
            type=float,
            default=None,
            help="Kill the worker when its loop has not gone round for this many seconds (0: no watchdog; "
            "default: the longest of 30 s, 6 x WORKER_HEARTBEAT and 4 x REDIS_SOCKET_TIMEOUT).",
        )

    def handle(self, *args, **options):
        warn_about_insecure_settings()
        if webhooks_worker.QUEUE not in args and not options["burst"]:
            limit = options.pop("watchdog")
            if limit is None:
                limit = max(30.0, 6.0 * settings.WORKER_HEARTBEAT, 4.0 * settings.REDIS_SOCKET_TIMEOUT)
            if limit > 0:
                watchdog.install(limit)  # first: a fork before any thread or connection exists
        if webhooks_worker.QUEUE in args:
            if len(args) > 1:
                raise CommandError(f"`{webhooks_worker.QUEUE}` has a worker of its own: name it alone")
            level = "DEBUG" if options["verbosity"] >= 2 else "WARNING" if options["verbosity"] == 0 else "INFO"
            return webhooks_worker.run(burst=options["burst"], name=options["name"], logging_level=level)
        if args:
            return super().handle(*self.check_named(args), **options)
        names = self.on_home(self.runnable())
        with WebhooksChild(burst=options["burst"]):  # deliveries never run in a model worker's process
            return super().handle(*names, **options)

    @staticmethod
    def check_named(names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            try:
                get_task_type(name).model  # noqa: B018 (imports the implementation)
            except UnknownTaskType:
                raise CommandError(f"no task type is named {name!r}") from None
            except ImplementationUnavailable as exc:
                raise CommandError(str(exc)) from None
        try:  # its queues on one Redis: it takes from them in one script
            jobs.one_server(list(names))
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        return names

    @staticmethod
    def on_home(names: list[str]) -> list[str]:
        """Of the types named, those on the home Redis: one on a Redis of its own (TASK_REDIS_URLS)
        has workers of its own (`rqworker <type>`)."""
        home = [name for name in names if jobs.server_of(name) == jobs.HOME]
        for name in sorted(set(names) - set(home)):
            reason = f"on its own Redis (TASK_REDIS_URLS): start `rqworker {name}` for it"
            logger.warning("leaving out a task type", extra={"task_type": name, "reason": reason})
        if not home:
            raise CommandError("every task type is on a Redis of its own (TASK_REDIS_URLS): name the types to serve")
        return home

    @staticmethod
    def runnable() -> list[str]:
        names = []
        for task_type in task_types():
            try:
                task_type.model  # noqa: B018 (imports the implementation)
            except ImplementationUnavailable as exc:
                logger.warning("leaving out a task type", extra={"task_type": task_type.name, "reason": str(exc)})
                continue
            names.append(task_type.name)
        if not names:
            raise CommandError("no task type's requirements are installed here")
        return names


class WebhooksChild:
    """`rqworker webhooks` as a child process of plain `rqworker`, started again if it dies, and
    stopped with its parent (it also stops by itself when the parent is gone)."""

    RESTART_DELAY = 1.0

    def __init__(self, *, burst: bool) -> None:
        self.burst = burst
        self.process: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.watcher = threading.Thread(target=self._keep_running, name="webhooks-child", daemon=True)

    def __enter__(self):
        self.process = self._start()
        if not self.burst:
            self.watcher.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()
        if self.process is not None:
            if not self.burst and self.process.poll() is None:
                self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _start(self) -> subprocess.Popen:
        args = [sys.executable, sys.argv[0], "rqworker", webhooks_worker.QUEUE, *(["--burst"] if self.burst else [])]
        env = {**os.environ, webhooks_worker.PARENT_ENV: str(os.getpid())}
        return subprocess.Popen(args, env=env)

    def _keep_running(self) -> None:
        while not self.stopping.is_set():
            code = self.process.wait()
            if self.stopping.wait(self.RESTART_DELAY):
                return
            logger.warning("the webhooks worker exited: starting it again", extra={"exit_code": code})
            self.process = self._start()
