"""The webhooks worker (`manage.py rqworker webhooks`): RQ's SimpleWorker on the queue `webhooks`,
running each delivery's attempt in a bounded pool of threads, plus a dispatcher thread.

The dispatcher turns the events of jobs with subscriptions into deliveries and queues again the
deliveries due (retries, attempts whose worker died). Only one worker across replicas dispatches
(a lease in Redis, lost within seconds with its holder); every one of them delivers. Model
workers never send a webhook: their only part is the event each change of a job appends anyway.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from django.conf import settings
from rq.queue import Queue
from rq.worker import SimpleWorker

from factorize_app import jobs
from factorize_app.jobs.connection import redis_connection
from factorize_app.tasks import get_task_type
from factorize_app.webhooks import attempts
from factorize_app.webhooks.dispatcher import Dispatcher, DispatcherLease
from factorize_app.webhooks.keys import QUEUE
from factorize_app.worker import RecoverableCleaning, _as_queue_error, _Trouble

logger = logging.getLogger("factorize_app.webhooks")

# Longest the dispatcher blocks for new events: a retry falls due at most this late.
DISPATCH_BLOCK_MS = 500
# How often it looks for watched jobs that vanished or waited too long.
STALE_CHECK_SECONDS = 10.0
# The environment variable by which plain `rqworker` tells its webhooks child who its parent is
# (the child stops when that process is gone, e.g. SIGKILLed).
PARENT_ENV = "FACTORIZE_WEBHOOKS_PARENT"


def status_body_at(job_id: str, event: jobs.JobEvent, name: str) -> dict[str, Any] | None:
    """What a delivery carries: the job's status body (as `GET /jobs/<id>` answers) as of the
    event, plus `"event"`; None if the job is gone."""
    try:
        state = jobs.get_status(job_id=job_id)
    except jobs.JobNotFound:
        return None
    state = jobs.state_after(state, event)
    return {**jobs.status_body(get_task_type(state.task_name), state), "event": name}


class WebhookWorker(RecoverableCleaning, SimpleWorker):
    """Serves the queue `webhooks` only: a delivery's RQ job claims an attempt and hands it to the
    pool, so the worker takes the next delivery at once while slow receivers are waited on."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("maintenance_interval", settings.WORKER_MAINTENANCE_INTERVAL)
        kwargs.setdefault("job_monitoring_interval", settings.WORKER_HEARTBEAT)
        super().__init__(*args, **kwargs)
        if self.queue_names() != [QUEUE]:
            raise ValueError(f"the webhooks worker serves the queue {QUEUE!r} only")
        self._stopping = threading.Event()
        self._trouble = _Trouble(f"webhooks worker {self.name}")
        self._dispatcher: threading.Thread | None = None
        self._pool: attempts.AttemptPool | None = None

    # --- a Redis that refuses writes (full, read-only) or is gone: waited out, never a crash ---
    # RQ's loop quits on any exception (and its teardown then raises): each step that writes
    # waits instead, saying so once when the trouble starts and once when it ends.

    def bootstrap(self, *args, **kwargs) -> None:
        trouble = _Trouble("webhooks worker start")
        while True:
            try:
                super().bootstrap(*args, **kwargs)
                trouble.ok()
                return
            except Exception as exc:
                if _as_queue_error(exc) is None:
                    raise
                time.sleep(trouble.failed(_as_queue_error(exc)))

    def register_birth(self) -> None:
        if not getattr(self, "_registered", False):  # a retried bootstrap registers once
            super().register_birth()
            self._registered = True

    def subscribe(self) -> None:
        if self.pubsub_thread is None:
            super().subscribe()

    def _riding_out(self, exc: BaseException) -> bool:
        """True (after the wait) for an outage or a write refusal; False for anything else."""
        error = _as_queue_error(exc)
        if error is None:
            return False
        wait = self._trouble.failed(error)
        deadline = time.monotonic() + wait
        while not self._stop_requested and time.monotonic() < deadline:
            time.sleep(0.1)
        return True

    def heartbeat(self, *args, **kwargs) -> None:
        try:
            super().heartbeat(*args, **kwargs)
        except Exception as exc:
            if _as_queue_error(exc) is None:
                raise
            self._trouble.failed(_as_queue_error(exc))  # no wait: the next beat tries again
            return
        self._trouble.ok()

    def run_maintenance_tasks(self) -> None:
        try:
            super().run_maintenance_tasks()
        except Exception as exc:
            if not self._riding_out(exc):
                raise

    def execute_job(self, job, queue) -> None:
        """A delivery's carrier job; one that cannot be recorded is retried by the dispatcher
        (its attempt's lease ends), not by this worker quitting."""
        try:
            super().execute_job(job, queue)
        except Exception as exc:
            if not self._riding_out(exc):
                raise

    def teardown(self) -> None:
        try:
            super().teardown()
        except Exception as exc:
            if _as_queue_error(exc) is None:
                raise
            logger.warning("the webhooks worker could not unregister", extra={"error": repr(exc)})

    @property
    def dequeue_timeout(self) -> int:
        """Heartbeat while idle every WORKER_HEARTBEAT (RQ's default blocks for minutes), so that
        `manage.py workerhealth` judges this worker like the others."""
        return max(1, settings.WORKER_HEARTBEAT)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        """Take a delivery only with a free thread to run it (heartbeating while all are busy);
        while Redis refuses or is gone, wait (None would end RQ's loop)."""
        while True:
            while not self._pool.reserve(timeout=max(1, settings.WORKER_HEARTBEAT)):
                self.heartbeat()
                if self._stop_requested:
                    return None
            try:
                taken = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except Exception as exc:
                if not self._riding_out(exc) or self._stop_requested:
                    raise
                continue
            self._trouble.ok()
            return taken

    def work(self, burst: bool = False, *args, **kwargs) -> bool:
        self._pool = attempts.AttemptPool(settings.WEBHOOK_CONCURRENCY)
        attempts.use_pool(self._pool)
        if not burst:  # a burst only drains what is queued
            self._dispatcher = threading.Thread(target=self._dispatch, name="webhook-dispatcher", daemon=True)
            self._dispatcher.start()
        try:
            return super().work(burst, *args, **kwargs)
        finally:
            self._stopping.set()
            self._pool.shutdown()
            attempts.use_pool(None)
            if self._dispatcher is not None:
                self._dispatcher.join(timeout=DISPATCH_BLOCK_MS / 1000 + 5)

    def _dispatch(self) -> None:
        lease = DispatcherLease()
        dispatcher = Dispatcher()
        parent = int(os.environ.get(PARENT_ENV, "0") or 0)
        stale_check, failing, holding = 0.0, False, False
        while not self._stopping.is_set():
            if parent and os.getppid() != parent:
                logger.warning("the worker that started this webhooks worker is gone: stopping")
                os.kill(os.getpid(), signal.SIGTERM)
                return
            try:
                if not lease.hold():
                    if holding:
                        logger.info("another webhooks worker dispatches now")
                    holding = False
                    self._stopping.wait(1.0)
                    continue
                if not holding:
                    logger.info("dispatching webhooks", extra={"worker": self.name})
                holding = True
                dispatcher.requeue_due()
                if time.monotonic() - stale_check > STALE_CHECK_SECONDS:
                    stale_check = time.monotonic()
                    dispatcher.forget_stale()
                jobs.reconcile()  # events of what RQ's tools did to jobs, which webhooks owe deliveries for
                dispatcher.dispatch(block_ms=DISPATCH_BLOCK_MS, body_for=status_body_at)
                if failing:
                    logger.info("webhooks dispatcher: Redis answers again")
                failing = False
            except Exception as exc:  # noqa: BLE001 (an outage, or a bug: the loop must go on)
                if not failing:
                    logger.warning("webhooks dispatcher: cannot dispatch", extra={"error": repr(exc)})
                failing = True
                self._stopping.wait(1.0)
        lease.release()


def run(*, burst: bool = False, name: str | None = None, logging_level: str = "INFO") -> None:
    """`manage.py rqworker webhooks`."""
    connection = redis_connection()
    worker = WebhookWorker([Queue(QUEUE, connection=connection)], connection=connection, name=name)
    worker.work(burst=burst, logging_level=logging_level)
