"""The model worker's RQ loop: RQ's own steps (suspension, maintenance, heartbeats, registration,
teardown), taking a batch in one round trip where RQ dequeues one job, and riding out Redis
outages where RQ would quit.
"""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings
from rq import worker_registration
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import StopRequested
from rq.suspension import is_suspended
from rq.worker import DequeueStrategy, WorkerStatus

from factorize_app import jobs, watchdog
from factorize_app.tasks import TaskType, get_task_type
from factorize_app.worker import execution, startup
from factorize_app.worker.base import ServiceWorker
from factorize_app.worker.costs import CostEstimates
from factorize_app.worker.interruption import Interruptible, JobAlarm, stoppable_during_setup
from factorize_app.worker.lease import LeaseKeeper, lease_seconds
from factorize_app.worker.outage import Trouble, as_queue_error

logger = logging.getLogger("factorize_app.worker")

# Longest an idle worker blocks before it looks at its queues again (jobs re-queued by RQ itself
# send no wake-up token).
IDLE_WAIT = 1.0
# How often the loop asks whether `rq suspend` holds (to show the worker as suspended and wait):
# not before every take, since the take script itself takes nothing while it holds.
SUSPENSION_CHECK = 1.0


class WarmWorker(Interruptible, ServiceWorker):
    """The model worker (`manage.py rqworker`, through RQ["WORKER_CLASS"])."""

    death_penalty_class = JobAlarm

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.costs = CostEstimates()
        self.keeper = LeaseKeeper(self)  # the lease keeper's thread, started at the first batch
        self.server = jobs.serve_queues(self.queue_names())  # its queues' Redis (one: rqworker checks)

    def bootstrap(self, *args, **kwargs) -> None:
        # Load models before registering, so a worker counts as live only once it is ready.
        with stoppable_during_setup():
            startup.load_models(self.queue_names())
        startup.drop_lost_predecessors(self.hostname, self.server)
        # Registering writes to Redis: on a full or read-only Redis (or none), wait until it takes
        # writes (ServiceWorker's registration steps are idempotent for this retry).
        trouble = Trouble("worker start")
        while True:
            try:
                super().bootstrap(*args, **kwargs)
                if mended := jobs.upgrade_statuses(server=self.server):
                    logger.info("statuses of an earlier version mended", extra={"jobs": mended})
                jobs.clear_setup_failures(task_names=self.queue_names())  # reported no more
                trouble.ok()
                return
            except Exception as exc:
                error = as_queue_error(exc)
                if error is None:
                    raise
                with stoppable_during_setup():  # a stop ends a worker still waiting
                    time.sleep(trouble.failed(error))

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's wait while `rq suspend` holds, telling the watchdog each second that the worker
        waits rather than is stuck."""
        if not is_suspended(self.connection, self):  # one round trip (RQ's heartbeat rides along)
            return
        if burst:
            return super().check_for_suspension(burst)  # RQ's: says so and stops
        self.log.info("Worker %s: suspended, run `rq resume` to resume", self.name)
        before = self.get_state()
        self.set_state(WorkerStatus.SUSPENDED)
        while not self._stop_requested and is_suspended(self.connection, self):
            watchdog.stamp()
            time.sleep(1)
        self.set_state(before)

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        """RQ's heartbeat; and register again if a surviving worker unregistered this one as dead
        (it could not beat for three beats, in an outage), so that it counts as live again."""
        if pipeline is not None:
            return super().heartbeat(timeout, pipeline=pipeline)
        with self.connection.pipeline() as pipe:
            super().heartbeat(timeout, pipeline=pipe)
            recreated = pipe.execute()[0] == 1  # HSET made a new field: the hash had gone
        if recreated and getattr(self, "_registered", False):
            logger.info("registered again after being taken for dead", extra={"worker": self.name})
            with self.connection.pipeline() as pipe:
                pipe.hset(self.key, mapping={**self.serialize(), "state": self._state or WorkerStatus.IDLE})
                worker_registration.register(self, pipe)
                pipe.expire(self.key, timeout or self.worker_ttl + 60)
                pipe.execute()

    def run_maintenance_tasks(self) -> None:
        """RQ's maintenance (dead workers' jobs recovered from their expired leases), then the
        registrations of workers that stopped heartbeating, then queued jobs lost in outages."""
        super().run_maintenance_tasks()
        for name in jobs.clean_stale_workers(server=self.server):
            logger.info("unregistered a worker that stopped heartbeating", extra={"worker": name})
        jobs.recount_running(server=self.server)
        swept = jobs.sweep_queue(server=self.server)
        if swept.restored:
            logger.info(swept.describe(), extra={"jobs": swept.restored, "gap_seconds": round(swept.gap, 1)})

    def work(
        self,
        burst: bool = False,
        logging_level: str | None = None,
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
        max_jobs: int | None = None,
        max_idle_time: int | None = None,
        with_scheduler: bool = False,
        dequeue_strategy: DequeueStrategy = DequeueStrategy.DEFAULT,
    ) -> bool:
        """RQ's work loop, taking batches, and riding out Redis outages instead of quitting."""
        self.bootstrap(logging_level, date_format, log_format)
        if with_scheduler:
            self._start_scheduler(burst, logging_level, date_format, log_format)
        self._install_signal_handlers()
        completed = 0
        idle_since = time.monotonic()
        trouble = Trouble(f"worker {self.name}")
        woken = False
        try:
            while not self._stop_requested:
                watchdog.stamp()  # the loop goes round: not stuck
                try:
                    if not woken:  # a worker woken for a job takes it first: these wait a batch
                        self._between_batches(burst)
                    woken = False
                    self._state = WorkerStatus.BUSY  # from here a stop request waits for the batch
                    taken = self._take()
                    if taken:
                        completed += execution.run_batch(self, taken)
                        idle_since = time.monotonic()
                    self._state = WorkerStatus.IDLE  # finish_jobs wrote the same to Redis
                    if taken and max_jobs is not None and completed >= max_jobs:
                        break
                    if not taken:
                        if burst or (max_idle_time is not None and time.monotonic() - idle_since > max_idle_time):
                            break
                        woken = jobs.wait_for_work(queue_names=self.queue_names(), timeout=IDLE_WAIT)
                    trouble.ok()
                except (jobs.QueueUnavailable, redis.exceptions.RedisError) as exc:
                    error = as_queue_error(exc)
                    if error is None:
                        raise
                    self._state = WorkerStatus.IDLE
                    self._wait_out(trouble.failed(error))
        except StopRequested:
            pass
        finally:
            watchdog.stop_watching()  # a warm stop's teardown (and the webhooks child's) may take long
            try:
                self.teardown()
            except (jobs.QueueUnavailable, redis.exceptions.RedisError) as exc:
                if as_queue_error(exc) is None:
                    raise
                self.log.warning("Worker %s: could not unregister (%s)", self.name, exc)
        return bool(completed)

    # --- taking a batch ---------------------------------------------------------------------

    def _take(self) -> list[jobs.TakenJob]:
        """A batch from the first listened-to queue that has jobs, sized for that queue's type;
        a type with a batch handler may wait a few milliseconds to fill its batch."""
        self._beat_if_due()
        for name in self.queue_names():
            task_type = get_task_type(name)
            count = self.costs.batch_size(task_type)
            taken = self._take_from(name, count)
            if taken:
                return self._fill(task_type, taken, count)
        return []

    def _take_from(self, queue_name: str, count: int) -> list[jobs.TakenJob]:
        return jobs.take_jobs(
            queue_names=[queue_name],
            worker_name=self.name,
            count=count,
            lease=lease_seconds(),
            estimates=self.costs.per_type(self.queue_names()),
        )

    def _fill(self, task_type: TaskType, taken: list[jobs.TakenJob], count: int) -> list[jobs.TakenJob]:
        """Wait up to the type's max_batch_delay for more jobs to join a short batch, as model
        servers do (one model call for more inputs): only for types with a batch handler."""
        if task_type.batch_handler is None or not task_type.max_batch_delay or len(taken) >= count:
            return taken
        deadline = time.monotonic() + task_type.max_batch_delay
        while len(taken) < count and (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(remaining, 0.002))
            taken += self._take_from(task_type.name, count - len(taken))
        return taken

    # --- between batches --------------------------------------------------------------------

    def _between_batches(self, burst: bool) -> None:
        """RQ's chores, each when due: the suspension check (at most every SUSPENSION_CHECK: the
        take script refuses to take while suspended anyway), maintenance, reconciliation."""
        if time.monotonic() >= getattr(self, "_next_suspension_check", 0.0):
            self._next_suspension_check = time.monotonic() + SUSPENSION_CHECK
            self.check_for_suspension(burst)
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()
        self._reconcile_if_due()

    def _reconcile_if_due(self) -> None:
        """Events for what RQ's tools did to jobs (its cleanup, `rq requeue`, `rq empty`), looked
        for at most once a second here, and by one process at a time across the deployment."""
        if time.monotonic() >= getattr(self, "_next_reconcile", 0.0):
            self._next_reconcile = time.monotonic() + jobs.RECONCILE_SECONDS
            jobs.reconcile()

    def _beat_if_due(self) -> None:
        if time.monotonic() - getattr(self, "_last_beat", 0.0) >= settings.WORKER_HEARTBEAT:
            self.heartbeat()
            self._last_beat = time.monotonic()

    def _wait_out(self, seconds: float) -> None:
        """An outage's wait, cut short by a stop request."""
        deadline = time.monotonic() + seconds
        while not self._stop_requested and time.monotonic() < deadline:
            watchdog.stamp()  # waiting out an outage is not being stuck
            time.sleep(max(0.0, min(0.1, deadline - time.monotonic())))
