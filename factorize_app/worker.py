"""The worker class: loads each listened-to task type's model once, then runs jobs in batches.

RQ's default `Worker` forks a child per job, which would throw a warm model (and any CUDA
context) away after every job; `SimpleWorker` keeps everything in one process. RQ also pays
about twenty Redis round trips per job; this worker takes a batch of jobs in one round trip,
runs them, and records them in a few transactions, on RQ's own job hashes, registries and
result streams, so the dashboard and `rq info` see every job as usual.

A batch never holds a result back: results are recorded in groups by time (RESULT_FLUSH_SECONDS
after the first unrecorded one), not when the batch ends, and jobs taken but not yet started go
back to the queue, for other workers, once the job running ahead of them has run long
(HAND_BACK_AFTER). The size of the next batch follows the median cost of a type's recent jobs.

Redis outages and write refusals (a full Redis, a read-only replica, failed persistence) are
ridden out alike: a worker waits with backoff, keeps the results it computed until they are
recorded, registers once Redis takes writes, and logs one line when the trouble starts and one
when it ends, not one per retry. Its maintenance also unregisters workers that stopped
heartbeating and recovers queued jobs lost in an outage (jobs.sweep_queue).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import signal
import statistics
import threading
import time
import traceback

import redis
from django.conf import settings
from rq import worker_registration
from rq.command import handle_command, parse_payload
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import StopRequested
from rq.registry import clean_registries
from rq.suspension import is_suspended
from rq.timeouts import JobTimeoutException
from rq.utils import now as rq_now
from rq.worker import DequeueStrategy, SimpleWorker, WorkerStatus

from factorize_app import jobs, watchdog
from factorize_app.tasks import TaskType, ensure_setup, get_task_type
from factorize_app.tasks.registry import Progress

logger = logging.getLogger("factorize_app.worker")

# Longest an idle worker blocks before it looks at its queues again (jobs re-queued by RQ itself
# send no wake-up token).
IDLE_WAIT = 1.0
# Redis outages: wait this long before the first retry, doubling up to the cap.
RETRY_FIRST, RETRY_CAP = 0.5, 30.0
# A write refusal is looked at more often: results waiting to be recorded should be recorded
# within a few seconds of Redis taking writes again, well inside their lease.
REFUSAL_RETRY_CAP = 5.0
# Results finished within this long of each other are recorded in one transaction.
RESULT_FLUSH_SECONDS = 0.05
# Jobs of a type that has not run here yet: take a few, not a full batch, until its cost is known.
FIRST_BATCH = 10
# How often the lease keeper looks for results due to be recorded and jobs held up by a long one.
KEEPER_CHECK = 0.025
# How often a busy worker looks for requests to stop its running jobs (well within the 1 s promised).
STOP_CHECK = 0.2
# A running job's progress is written at most this often, however often its handler reports.
PROGRESS_INTERVAL = 0.25
PROGRESS_MESSAGE_MAX = 200
# Why a running job is stopped when its client gives the worker back (it is queued again).
YIELDED = "handed back: another client's job waited for a worker"


def hand_back_after() -> float:
    """A job running this long hands the batch's unstarted jobs back to the queue: five times
    the work a whole batch aims at (1 s by default)."""
    return 5 * settings.WORKER_BATCH_SECONDS


class _Trouble:
    """Logs the state changes of the job queue as one worker sees it: one line when it becomes
    unavailable (or changes how), one when it serves again; the waits in between say nothing."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.current: str | None = None
        self.retry_in = RETRY_FIRST

    def failed(self, error: jobs.QueueUnavailable) -> float:
        """Note a failure; answers how long to wait before the next try."""
        state = error.reason if isinstance(error, jobs.QueueRefusesWrites) else "unavailable"
        if state != self.current:
            logger.error(f"{self.what}: {_describe(error)}; waiting", extra={"queue_state": state})
            self.current = state
        wait = self.retry_in
        cap = REFUSAL_RETRY_CAP if isinstance(error, jobs.QueueRefusesWrites) else RETRY_CAP
        self.retry_in = min(self.retry_in * 2, cap)
        return min(wait, cap)

    def ok(self) -> None:
        if self.current is not None:
            logger.info(f"{self.what}: the job queue serves again", extra={"queue_state": "ok"})
        self.current, self.retry_in = None, RETRY_FIRST


def _describe(error: jobs.QueueUnavailable) -> str:
    if isinstance(error, jobs.QueueRefusesWrites):
        return f"Redis refuses writes ({error.reason}): {error}"
    return str(error)


def _as_queue_error(exc: BaseException) -> jobs.QueueUnavailable | None:
    return jobs.queue_error(exc) if isinstance(exc, (jobs.QueueUnavailable, redis.exceptions.RedisError)) else None


class RecoverableCleaning:
    """RQ's registry cleaning (each queue's dead workers' jobs retried or failed) under a lock that
    a killed cleaner does not keep for 15 minutes (jobs.take_cleaning_lock)."""

    def clean_registries(self) -> None:
        for queue in self.queues:
            if jobs.take_cleaning_lock(queue_name=queue.name, worker_name=self.name):
                self.log.info("Worker %s: cleaning registries for queue: %s", self.name, queue.name)
                clean_registries(queue, self._exc_handlers)
                worker_registration.clean_worker_registry(queue)
                queue.intermediate_queue.cleanup(self, queue)
                queue.release_maintenance_lock()
        self.last_cleaned_at = rq_now()


class WarmWorker(RecoverableCleaning, SimpleWorker):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("maintenance_interval", settings.WORKER_MAINTENANCE_INTERVAL)
        kwargs.setdefault("job_monitoring_interval", settings.WORKER_HEARTBEAT)
        super().__init__(*args, **kwargs)
        self._costs = CostEstimates()

    def interrupt(self, job_id: str, reason: str) -> None:
        """Stop the running job `job_id` in this process (the lease keeper's call, from its thread):
        SIGUSR2 makes the main thread raise JobStopped inside the handler, between two Python
        bytecodes, so the model stays loaded and the worker takes its next job. A handler deep in
        one long C call stops when that call returns."""
        self._interrupt = (job_id, reason)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR2)

    def _on_interrupt(self, signum, frame) -> None:
        wanted = getattr(self, "_interrupt", None)
        if wanted is not None and wanted[0] == getattr(self, "_interruptible", None):
            self._interrupt = None
            raise JobStopped(wanted[1])

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        signal.signal(signal.SIGUSR2, self._on_interrupt)

    def bootstrap(self, *args, **kwargs) -> None:
        # Load models before registering, so a worker counts as live only once it is ready.
        # RQ installs its warm-shutdown handlers after bootstrap; until then a stop request
        # must still end the process, even as a container's PID 1 (which ignores SIGTERM).
        previous = signal.signal(signal.SIGTERM, _stop_during_setup)
        try:
            for name in self.queue_names():
                task_type = get_task_type(name)
                started = time.monotonic()
                _setup_or_report(task_type)
                logger.info("setup done", extra={"task_type": name, "duration_s": round(time.monotonic() - started, 3)})
        finally:
            signal.signal(signal.SIGTERM, previous)
        self._drop_lost_predecessors()
        # Registering writes to Redis: on a full or read-only Redis (or none), wait until it takes
        # writes. register_birth and subscribe are made idempotent below, so a retry that comes
        # after some of RQ's steps went through repeats none of them.
        trouble = _Trouble("worker start")
        while True:
            try:
                super().bootstrap(*args, **kwargs)
                if mended := jobs.upgrade_statuses():
                    logger.info("statuses of an earlier version mended", extra={"jobs": mended})
                jobs.clear_setup_failures(task_names=self.queue_names())  # reported no more
                trouble.ok()
                return
            except Exception as exc:
                error = _as_queue_error(exc)
                if error is None:
                    raise
                self._sleep_during_setup(trouble.failed(error))

    def _drop_lost_predecessors(self) -> None:
        """A worker SIGKILLed (by the kernel for memory, or by its watchdog) leaves its
        registration behind: say so in one line, and drop it now rather than 3 beats later."""
        try:
            lost = jobs.drop_lost_workers(hostname=self.hostname, alive=watchdog.process_alive)
        except jobs.QueueUnavailable:
            return  # the maintenance of any worker drops it once Redis answers
        for worker in lost:
            logger.warning(
                "the last worker on this host died without unregistering (killed: out of memory?)",
                extra={"worker": worker.name, "pid": worker.pid, "queues": worker.queues,
                       "last_heartbeat": worker.last_heartbeat, "memory_limit": _memory_limit()},
            )  # fmt: skip

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's wait while `rq suspend` holds, telling the watchdog each second that the worker
        waits rather than is stuck."""
        if burst or not is_suspended(self.connection, self):
            return super().check_for_suspension(burst)
        self.log.info("Worker %s: suspended, run `rq resume` to resume", self.name)
        before = self.get_state()
        self.set_state(WorkerStatus.SUSPENDED)
        while not self._stop_requested and is_suspended(self.connection, self):
            watchdog.stamp()
            time.sleep(1)
        self.set_state(before)

    def handle_payload(self, message) -> None:
        """RQ's commands to this worker (its pubsub thread): a stop of a job (django-rq's Stop
        button, `send_stop_job_command`) goes the way of DELETE /jobs/<id>, for everyone (staff):
        a stop request the lease keeper acts on within a second. Others as RQ handles them."""
        payload = parse_payload(message)
        job_id = payload.get("job_id")
        if payload.get("command") not in ("stop-job", "stop-execution") or not isinstance(job_id, str):
            handle_command(self, payload)
            return
        try:
            jobs.cancel(job_id=job_id, staff=True)
            logger.info("stop asked through RQ", extra={"job_id": job_id})
        except (jobs.JobNotFound, jobs.JobNotCancellable, jobs.QueueUnavailable) as exc:
            logger.warning("stop asked through RQ not done", extra={"job_id": job_id, "error": repr(exc)})

    def register_birth(self) -> None:
        if not getattr(self, "_registered", False):
            super().register_birth()
            self._registered = True

    def subscribe(self) -> None:
        if self.pubsub_thread is None:
            super().subscribe()

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
        for name in jobs.clean_stale_workers():
            logger.info("unregistered a worker that stopped heartbeating", extra={"worker": name})
        jobs.recount_running()
        swept = jobs.sweep_queue()
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
        trouble = _Trouble(f"worker {self.name}")
        try:
            while not self._stop_requested:
                watchdog.stamp()  # the loop goes round: not stuck
                try:
                    self.check_for_suspension(burst)
                    if self.should_run_maintenance_tasks:
                        self.run_maintenance_tasks()
                    self._reconcile_if_due()
                    self._state = WorkerStatus.BUSY  # from here a stop request waits for the batch
                    taken = self._take()
                    if taken:
                        completed += self._run_batch(taken)
                        idle_since = time.monotonic()
                    self._state = WorkerStatus.IDLE  # finish_jobs wrote the same to Redis
                    if taken and max_jobs is not None and completed >= max_jobs:
                        break
                    if not taken:
                        if burst or (max_idle_time is not None and time.monotonic() - idle_since > max_idle_time):
                            break
                        jobs.wait_for_work(queue_names=self.queue_names(), timeout=IDLE_WAIT)
                    trouble.ok()
                except (jobs.QueueUnavailable, redis.exceptions.RedisError) as exc:
                    error = _as_queue_error(exc)
                    if error is None:
                        raise
                    self._state = WorkerStatus.IDLE
                    self._sleep(trouble.failed(error))
        except StopRequested:
            pass
        finally:
            watchdog.stop_watching()  # a warm stop's teardown (and the webhooks child's) may take long
            try:
                self.teardown()
            except (jobs.QueueUnavailable, redis.exceptions.RedisError) as exc:
                if _as_queue_error(exc) is None:
                    raise
                self.log.warning("Worker %s: could not unregister (%s)", self.name, exc)
        return bool(completed)

    # --- internals --------------------------------------------------------------------------

    def _take(self) -> list[jobs.TakenJob]:
        """A batch from the first listened-to queue that has jobs, sized for that queue's type;
        a type with a batch handler may wait a few milliseconds to fill its batch."""
        self._beat_if_due()
        for name in self.queue_names():
            task_type = get_task_type(name)
            count = self._batch_size(task_type)
            taken = jobs.take_jobs(
                queue_names=[name], worker_name=self.name, count=count, lease=self._lease, estimates=self._estimates
            )
            if taken:
                return self._fill(task_type, taken, count)
        return []

    @property
    def _estimates(self) -> dict[str, float]:
        """Seconds per job of each type as seen here: what fair order charges a client per job taken."""
        return {name: per_job for name in self.queue_names() if (per_job := self._costs.seconds_per_job(name))}

    def _batch_size(self, task_type: TaskType) -> int:
        """Aim a batch at WORKER_BATCH_SECONDS of this type's work, judged by its recent jobs."""
        limit = task_type.max_batch_size or settings.WORKER_BATCH_SIZE  # a model knows its own best batch
        per_job = self._costs.seconds_per_job(task_type.name)
        if per_job is None:
            return min(limit, FIRST_BATCH)
        return max(1, min(limit, int(settings.WORKER_BATCH_SECONDS / max(per_job, 1e-6))))

    def _fill(self, task_type: TaskType, taken: list[jobs.TakenJob], count: int) -> list[jobs.TakenJob]:
        """Wait up to the type's max_batch_delay for more jobs to join a short batch, as model
        servers do (one model call for more inputs): only for types with a batch handler."""
        if task_type.batch_handler is None or not task_type.max_batch_delay or len(taken) >= count:
            return taken
        deadline = time.monotonic() + task_type.max_batch_delay
        while len(taken) < count and (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(remaining, 0.002))
            taken += jobs.take_jobs(
                queue_names=[task_type.name],
                worker_name=self.name,
                count=count - len(taken),
                lease=self._lease,
                estimates=self._estimates,
            )
        return taken

    def _run_batch(self, taken: list[jobs.TakenJob]) -> int:
        task_type = get_task_type(taken[0].task_name)
        batch = _Batch(self.name, taken)
        with _LeaseKeeper(self, batch):
            if task_type.batch_handler is not None and len(taken) > 1:
                running = batch.start_all()
                ended = {job.job_id: outcome for job in running if (outcome := _ended_before_start(job))}
                batch.record(list(ended.values()), ran=False)
                running = [job for job in running if job.job_id not in ended]
                together = self._run_together(task_type, running, batch.reporter(running)) if running else []
                if together:
                    batch.record(batch.stopped_meanwhile(together))
                else:
                    batch.unstart(running)  # the handler failed: run them one by one
            while (job := batch.next_job()) is not None:
                if self._stop_requested:
                    batch.unstart([job])  # a warm stop: the running job has finished; hand the rest back
                    break
                batch.record([_ended_before_start(job) or self._run_one(task_type, job, batch.reporter([job]))])
            # Still under the lease keeper: jobs whose results wait for Redis stay leased to us.
            batch.finish()
        ended = [outcome for outcome in batch.outcomes if outcome.status != jobs.QUEUED]
        self._costs.learn(task_type.name, ended)
        self._log_batch(task_type, ended, batch.handed_back + len(batch.outcomes) - len(ended))
        return len(ended)

    def _run_one(self, task_type: TaskType, job: jobs.TakenJob, progress: Progress) -> jobs.JobOutcome:
        started = time.monotonic()
        try:
            if job.input is None:
                raise ValueError(f"job {job.job_id} has no input this service can read")
            with self.death_penalty_class(job.timeout, JobTimeoutException, job_id=job.job_id):
                self._interruptible = job.job_id
                try:
                    result = task_type.handler(job.input, progress=progress)
                finally:
                    self._interruptible = None
        except JobStopped as stopped:
            if stopped.reason == YIELDED:  # queued again, for later: not a failure, not a retry
                return jobs.JobOutcome(job, jobs.QUEUED, time.monotonic() - started)
            return jobs.JobOutcome(job, jobs.CANCELED, time.monotonic() - started, exc_string=stopped.reason)
        except JobTimeoutException:
            return jobs.JobOutcome(job, jobs.FAILED, time.monotonic() - started, exc_string="JobTimeoutException")
        except Exception:  # the job's failure, recorded for its client; the worker carries on
            return jobs.JobOutcome(job, jobs.FAILED, time.monotonic() - started, exc_string=traceback.format_exc())
        return jobs.JobOutcome(job, jobs.FINISHED, time.monotonic() - started, result=result)

    def _run_together(
        self, task_type: TaskType, taken: list[jobs.TakenJob], progress: Progress
    ) -> list[jobs.JobOutcome]:
        """One call of the type's batch handler for every job (one model call for K inputs).

        If it raises or times out, nothing is recorded and the jobs run one by one, so a bad
        input fails alone. Its time limit is the sum of the jobs' own.
        """
        if any(job.input is None for job in taken):
            return []
        started = time.monotonic()
        try:
            time_limit = sum(job.timeout for job in taken)
            with self.death_penalty_class(time_limit, JobTimeoutException, job_id=taken[0].job_id):
                results = task_type.batch_handler([job.input for job in taken], progress=progress)
            if len(results) != len(taken):
                raise ValueError(f"batch handler returned {len(results)} results for {len(taken)} inputs")
        except Exception:
            self.log.warning("batch handler of %s failed; running the jobs one by one", task_type.name, exc_info=True)
            return []
        each = (time.monotonic() - started) / len(taken)
        pairs = zip(taken, results, strict=True)
        return [jobs.JobOutcome(job, jobs.FINISHED, each, result=result) for job, result in pairs]

    def _log_batch(self, task_type: TaskType, outcomes: list[jobs.JobOutcome], handed_back: int) -> None:
        """One line per batch; one more per failed job (per finished job only at DEBUG level)."""
        for outcome in outcomes:
            if outcome.status == jobs.FAILED:
                error = jobs.describe_error(outcome.exc_string, outcome.job.timeout)
                logger.warning("job failed", extra=_event(outcome, error=error))
            elif logger.isEnabledFor(logging.DEBUG):
                logger.debug("job finished", extra=_event(outcome))
        logger.info(
            "batch done",
            extra={
                "task_type": task_type.name,
                "jobs": len(outcomes),
                "failed": sum(outcome.status == jobs.FAILED for outcome in outcomes),
                "handed_back": handed_back,
                "duration_s": round(sum(outcome.seconds for outcome in outcomes), 6),
            },
        )

    @property
    def _lease(self) -> int:
        return 3 * settings.WORKER_HEARTBEAT

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

    def _sleep_during_setup(self, seconds: float) -> None:
        previous = signal.signal(signal.SIGTERM, _stop_during_setup)  # a stop ends a worker still waiting
        try:
            time.sleep(seconds)
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop_requested and time.monotonic() < deadline:
            watchdog.stamp()  # waiting out an outage is not being stuck
            time.sleep(min(0.1, deadline - time.monotonic()))


class CostEstimates:
    """Seconds per job of each type: the median of its last jobs here, so one unusually fast (or
    slow) job does not swing the next batch's size; None for a type that has not run yet."""

    WINDOW = 32

    def __init__(self) -> None:
        self._recent: dict[str, collections.deque[float]] = {}

    def learn(self, task_name: str, outcomes: list[jobs.JobOutcome]) -> None:
        recent = self._recent.setdefault(task_name, collections.deque(maxlen=self.WINDOW))
        recent.extend(outcome.seconds for outcome in outcomes)

    def seconds_per_job(self, task_name: str) -> float | None:
        recent = self._recent.get(task_name)
        return statistics.median(recent) if recent else None


class _Batch:
    """The jobs of one batch as they move from taken to running to recorded, shared between the
    work loop and the lease keeper (which may hand the unstarted ones back): results are
    recorded by time, not when the batch ends."""

    def __init__(self, worker_name: str, taken: list[jobs.TakenJob]) -> None:
        self.worker_name = worker_name
        self.outcomes: list[jobs.JobOutcome] = []
        self.handed_back = 0
        self._lock = threading.Lock()
        self._unstarted = collections.deque(taken)
        self._running: tuple[float, list[jobs.TakenJob]] | None = None  # since when, which jobs
        self._unrecorded: list[jobs.JobOutcome] = []
        self._first_unrecorded_at = 0.0
        self._progress: dict[str, dict] = {}  # job id -> latest report not yet written
        self._stop_wanted: dict[str, str] = {}  # running job id -> why it is to stop
        self._progress_written_at = 0.0

    def reporter(self, running: list[jobs.TakenJob]) -> Progress:
        """The `progress` callable a handler gets: it only remembers the latest report (no I/O);
        the lease keeper writes it, at most every PROGRESS_INTERVAL. For a batch handler, the
        report is every job's of the batch."""

        def progress(fraction: float | None = None, message: str = "") -> None:
            value = {
                "fraction": None if fraction is None else min(1.0, max(0.0, float(fraction))),
                "message": str(message)[:PROGRESS_MESSAGE_MAX],
            }
            with self._lock:
                for job in running:
                    self._progress[job.job_id] = value

        return progress

    def write_progress_if_due(self) -> None:
        """The lease keeper's call: one attempt, one round trip for every job with news."""
        with self._lock:
            if not self._progress or time.monotonic() - self._progress_written_at < PROGRESS_INTERVAL:
                return
            progress, self._progress = self._progress, {}
            self._progress_written_at = time.monotonic()
        with contextlib.suppress(jobs.QueueUnavailable):  # progress is a hint: the next report tries again
            jobs.report_progress(progress=progress)

    def running(self) -> list[jobs.TakenJob]:
        with self._lock:
            return list(self._running[1]) if self._running else []

    def running_alone(self) -> tuple[jobs.TakenJob | None, float]:
        """The job running alone in its handler call, and since when (monotonic); None if none."""
        with self._lock:
            if self._running is None or len(self._running[1]) != 1:
                return None, 0.0
            return self._running[1][0], self._running[0]

    def stop(self, job_id: str, reason: str) -> bool:
        """A stop asked for one of this batch's jobs: an unstarted one ends canceled at once; a
        running one is remembered, and True says to interrupt it (a job alone in its handler
        call; one of a batch handler's call ends canceled when the call returns)."""
        with self._lock:
            for job in self._unstarted:
                if job.job_id == job_id:
                    self._unstarted.remove(job)
                    self._add_unrecorded([jobs.JobOutcome(job, jobs.CANCELED, 0.0, exc_string=reason)])
                    return False
            running = self._running[1] if self._running else []
            if any(job.job_id == job_id for job in running):
                self._stop_wanted[job_id] = reason
                return len(running) == 1
            return False

    def deadline_passed(self) -> bool:
        """A running job is past its Cancel-After deadline and not yet asked to stop: the lease
        keeper stops it on that tick (within KEEPER_CHECK), not at its next STOP_CHECK."""
        now = time.time()
        with self._lock:
            running = self._running[1] if self._running else []
            return any(
                job.deadline is not None and now > job.deadline and job.job_id not in self._stop_wanted
                for job in running
            )

    def set_deadline(self, job_id: str, deadline: float | None) -> None:
        """A running job's deadline as Redis has it now (a shared job's moves with its owners)."""
        with self._lock:
            if self._running and any(job.job_id == job_id for job in self._running[1]):
                since, running = self._running
                self._running = (since, [dataclasses.replace(job, deadline=deadline) if job.job_id == job_id else job
                                         for job in running])  # fmt: skip

    def stops_pending(self) -> dict[str, str]:
        """Stops asked for the job still running alone (to interrupt again if the last signal
        came between two handler calls)."""
        with self._lock:
            running = self._running[1] if self._running else []
            if len(running) != 1:
                return {}
            return {job_id: reason for job_id, reason in self._stop_wanted.items() if job_id == running[0].job_id}

    def stopped_meanwhile(self, outcomes: list[jobs.JobOutcome]) -> list[jobs.JobOutcome]:
        """A batch handler's outcomes, with the jobs stopped during its call ended canceled."""
        with self._lock:
            wanted = self._stop_wanted
            return [_canceled(o, wanted[o.job.job_id]) if o.job.job_id in wanted else o for o in outcomes]

    def next_job(self) -> jobs.TakenJob | None:
        with self._lock:
            if not self._unstarted:
                return None
            job = self._unstarted.popleft()
            self._running = (time.monotonic(), [job])
            return job

    def start_all(self) -> list[jobs.TakenJob]:
        """Every unstarted job at once (a batch handler's one call)."""
        with self._lock:
            running = list(self._unstarted)
            self._unstarted.clear()
            self._running = (time.monotonic(), running)
            return running

    def unstart(self, taken: list[jobs.TakenJob]) -> None:
        with self._lock:
            self._unstarted.extendleft(reversed(taken))
            self._running = None

    def record(self, outcomes: list[jobs.JobOutcome], *, ran: bool = True) -> None:
        """Keep the outcomes (of the jobs that were running, unless `ran` is False); record every
        unrecorded one once the oldest has waited long enough."""
        with self._lock:
            if ran:
                self._running = None
            self._add_unrecorded(outcomes)
            due = time.monotonic() - self._first_unrecorded_at >= RESULT_FLUSH_SECONDS
        if due:
            self._flush()

    def _add_unrecorded(self, outcomes: list[jobs.JobOutcome]) -> None:
        """Under the lock."""
        if not outcomes:
            return
        if not self._unrecorded:
            self._first_unrecorded_at = time.monotonic()
        self._unrecorded += outcomes
        self.outcomes += outcomes

    def finish(self) -> None:
        """Record what is left, hand back what never started (a warm stop), and mark the worker
        idle, in one transaction."""
        with self._lock:
            outcomes, self._unrecorded = self._unrecorded, []
            unstarted = list(self._unstarted)
            self._unstarted.clear()
        _retrying(lambda: jobs.finish_jobs(worker_name=self.worker_name, outcomes=outcomes, unstarted=unstarted))
        self.handed_back += len(unstarted)

    def hand_back_if_held_up(self) -> None:
        """The lease keeper's call: when the running job has run long, the jobs waiting behind it
        go back to the front of their queue, for any worker; a failure leaves them here."""
        with self._lock:
            if self._running is None or not self._unstarted:
                return
            if time.monotonic() - self._running[0] < hand_back_after():
                return
            waiting = list(self._unstarted)
            self._unstarted.clear()
        try:
            jobs.finish_jobs(worker_name=self.worker_name, outcomes=[], unstarted=waiting, batch_done=False)
        except jobs.QueueUnavailable:
            self.unstart_behind(waiting)
            return
        self.handed_back += len(waiting)
        logger.info("handed back jobs held up by a long one", extra={"jobs": len(waiting)})

    def unstart_behind(self, taken: list[jobs.TakenJob]) -> None:
        with self._lock:
            self._unstarted.extendleft(reversed(taken))

    def leased(self) -> list[jobs.TakenJob]:
        """The jobs this worker still holds: unstarted, running, or done but not yet recorded."""
        with self._lock:
            running = self._running[1] if self._running else []
            return [*self._unstarted, *running, *(outcome.job for outcome in self._unrecorded)]

    def record_if_due(self) -> None:
        """The lease keeper's call, while a job runs: one attempt, so that a Redis refusing writes
        never stops the keeper renewing leases; what it could not record waits for the next."""
        with self._lock:
            due = self._unrecorded and time.monotonic() - self._first_unrecorded_at >= RESULT_FLUSH_SECONDS
        if due:
            self._flush(retry=False)

    def _flush(self, retry: bool = True) -> None:
        with self._lock:
            outcomes, self._unrecorded = self._unrecorded, []
        if not outcomes:
            return
        record = lambda: jobs.finish_jobs(worker_name=self.worker_name, outcomes=outcomes, batch_done=False)  # noqa: E731
        if retry:
            _retrying(record)
            return
        try:
            record()
        except jobs.QueueUnavailable:
            with self._lock:  # the work loop records them at the batch's end, or this tries again in a second
                self._unrecorded = outcomes + self._unrecorded
                self._first_unrecorded_at = time.monotonic() + 1.0


class JobStopped(BaseException):
    """Raised in the main thread inside a running handler that was asked to stop. Not an
    Exception, so a handler's own `except Exception` does not swallow it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _canceled(outcome: jobs.JobOutcome, reason: str) -> jobs.JobOutcome:
    return jobs.JobOutcome(outcome.job, jobs.CANCELED, outcome.seconds, exc_string=reason)


def _past_deadline(job: jobs.TakenJob) -> bool:
    return job.deadline is not None and time.time() > job.deadline


def _ended_before_start(job: jobs.TakenJob) -> jobs.JobOutcome | None:
    """A taken job that must not run: stopped before it was taken (its worker died after the
    request), or past its Cancel-After deadline while it waited."""
    if job.stop:
        return jobs.JobOutcome(job, jobs.CANCELED, 0.0, exc_string=job.stop)
    if job.deadline is not None and time.time() > job.deadline:
        return jobs.JobOutcome(job, jobs.ABORTED, 0.0, exc_string=jobs.ABORTED_ERROR)
    return None


class _LeaseKeeper:
    """Renews a running batch's lease (and the worker's registration) every heartbeat, in a
    thread, so a long job keeps its jobs leased while a dead worker's expire within 3 beats;
    between beats, hands back the jobs a long-running one holds up."""

    def __init__(self, worker: WarmWorker, batch: _Batch) -> None:
        self._worker, self._batch = worker, batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease-keeper", daemon=True)

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _stop_what_is_asked(self) -> None:
        """Stop requests (DELETE of a running job) and passed deadlines of this batch's jobs."""
        try:
            asked = jobs.take_stop_requests(worker_name=self._worker.name)
        except jobs.QueueUnavailable:
            asked = {}
        wanted = {job_id: jobs.CANCELED_ERROR for job_id, stop in asked.items() if stop} | self._batch.stops_pending()
        running = self._batch.running()
        # A shared job's deadline is its owners' latest: read again when an owner withdrew, or
        # when the one taken with it passes (a later owner may have lifted or extended it).
        reread = [job.job_id for job in running if job.job_id in asked or _past_deadline(job)]
        if reread:
            with contextlib.suppress(jobs.QueueUnavailable):  # else the deadline taken with it holds
                for job_id, deadline in jobs.job_deadlines(job_ids=reread).items():
                    self._batch.set_deadline(job_id, deadline)
            running = self._batch.running()
        for job in running:
            if _past_deadline(job):
                wanted.setdefault(job.job_id, jobs.DEADLINE_CANCELED_ERROR)
        for job_id, reason in self._yield_if_fair().items():
            wanted.setdefault(job_id, reason)  # a cancel asked meanwhile wins
        for job_id, reason in wanted.items():
            if self._batch.stop(job_id, reason):
                self._worker.interrupt(job_id, reason)

    def _yield_if_fair(self) -> dict[str, str]:
        """A job running alone for long is handed back when its client holds more than its fair
        share of the type's workers, or every worker runs a long job and its client is the
        heaviest, while another client's job waits (jobs.yield_worker)."""
        running, since = self._batch.running_alone()
        ran = time.monotonic() - since
        if running is None or ran < hand_back_after():
            return {}
        try:
            started_at = time.time() - ran
            if jobs.yield_worker(
                worker_name=self._worker.name, job=running, started_at=started_at, ran=ran, grace=hand_back_after()
            ):
                logger.info("giving the worker back to another client", extra={"job_id": running.job_id})
                return {running.job_id: YIELDED}
        except jobs.QueueUnavailable:
            pass
        return {}

    def _renew(self) -> None:
        failing = False
        next_beat = time.monotonic() + settings.WORKER_HEARTBEAT
        next_stop_check = 0.0
        while not self._stop.wait(KEEPER_CHECK):
            watchdog.stamp()  # a job runs (however long): the process is not stuck
            self._batch.record_if_due()
            self._batch.write_progress_if_due()
            if time.monotonic() >= next_stop_check or self._batch.deadline_passed():
                next_stop_check = time.monotonic() + STOP_CHECK
                self._stop_what_is_asked()
            self._batch.hand_back_if_held_up()
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + settings.WORKER_HEARTBEAT
            try:
                jobs.extend_lease(taken=self._batch.leased(), lease=self._worker._lease)
                self._worker.heartbeat()
                failing = False
            except Exception as exc:  # an outage: the next beat tries again (said once)
                if not failing:
                    logger.warning("could not renew the lease", extra={"error": str(exc)})
                failing = True


def _retrying(action) -> None:
    """Record a batch even across a Redis outage or write refusal: its results are kept in memory
    until Redis takes them, never thrown away."""
    trouble = _Trouble("recording a batch")
    while True:
        try:
            action()
            trouble.ok()
            return
        except jobs.QueueUnavailable as exc:
            time.sleep(trouble.failed(exc))


def _event(outcome: jobs.JobOutcome, **extra) -> dict:
    return {
        "job_id": outcome.job.job_id,
        "task_type": outcome.job.task_name,
        "status": outcome.status,
        "duration_s": round(outcome.seconds, 6),
        **extra,
    }


def _memory_limit() -> int | None:
    """This container's memory limit in bytes (cgroup v2), if it has one."""
    try:
        with open("/sys/fs/cgroup/memory.max") as limit:
            value = limit.read().strip()
    except OSError:
        return None
    return int(value) if value.isdigit() else None


def _stop_during_setup(signum, frame):
    logger.info("stop requested while loading models: exiting")
    raise SystemExit(0)


def _setup_or_report(task_type: TaskType) -> None:
    """A type's model setup; if it raises, one log line with the traceback, the failure recorded
    where /queues and /readyz show it, and the worker exits (code 1) to be started again."""
    try:
        ensure_setup(task_type)
    except Exception as exc:
        logger.exception("setup failed: the worker exits", extra={"task_type": task_type.name})
        with contextlib.suppress(jobs.QueueUnavailable):
            error = f"{type(exc).__name__}: {exc}"
            jobs.record_setup_failure(task_name=task_type.name, error=error, traceback=traceback.format_exc())
        raise SystemExit(1) from exc
