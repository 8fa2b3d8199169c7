"""The worker class: loads each listened-to task type's model once, then runs jobs in batches.

RQ's default `Worker` forks a child per job, which would throw a warm model (and any CUDA
context) away after every job; `SimpleWorker` keeps everything in one process. RQ also pays
about twenty Redis round trips per job; this worker takes a batch of jobs in one round trip,
runs them, and records the whole batch in one transaction, on RQ's own job hashes, registries
and result streams, so the dashboard and `rq info` see every job as usual.

Redis outages and write refusals (a full Redis, a read-only replica, failed persistence) are
ridden out alike: a worker waits with backoff, keeps the results it computed until they are
recorded, registers once Redis takes writes, and logs one line when the trouble starts and one
when it ends, not one per retry. Its maintenance also unregisters workers that stopped
heartbeating and recovers queued jobs lost in an outage (jobs.sweep_queue).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback

import redis
from django.conf import settings
from rq import worker_registration
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import StopRequested
from rq.timeouts import JobTimeoutException
from rq.worker import DequeueStrategy, SimpleWorker, WorkerStatus

from factorize_app import jobs
from factorize_app.tasks import TaskType, ensure_setup, get_task_type

logger = logging.getLogger("factorize_app.worker")

# Longest an idle worker blocks before it looks at its queues again (jobs re-queued by RQ itself
# send no wake-up token).
IDLE_WAIT = 1.0
# Redis outages: wait this long before the first retry, doubling up to the cap.
RETRY_FIRST, RETRY_CAP = 0.5, 30.0
# A write refusal is looked at more often: results waiting to be recorded should be recorded
# within a few seconds of Redis taking writes again, well inside their lease.
REFUSAL_RETRY_CAP = 5.0


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


class WarmWorker(SimpleWorker):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("maintenance_interval", settings.WORKER_MAINTENANCE_INTERVAL)
        kwargs.setdefault("job_monitoring_interval", settings.WORKER_HEARTBEAT)
        super().__init__(*args, **kwargs)
        self._seconds_per_job: dict[str, float] = {}

    def bootstrap(self, *args, **kwargs) -> None:
        # Load models before registering, so a worker counts as live only once it is ready.
        # RQ installs its warm-shutdown handlers after bootstrap; until then a stop request
        # must still end the process, even as a container's PID 1 (which ignores SIGTERM).
        previous = signal.signal(signal.SIGTERM, _stop_during_setup)
        try:
            for name in self.queue_names():
                task_type = get_task_type(name)
                started = time.monotonic()
                ensure_setup(task_type)
                logger.info("setup done", extra={"task_type": name, "duration_s": round(time.monotonic() - started, 3)})
        finally:
            signal.signal(signal.SIGTERM, previous)
        # Registering writes to Redis: on a full or read-only Redis (or none), wait until it takes
        # writes. register_birth and subscribe are made idempotent below, so a retry that comes
        # after some of RQ's steps went through repeats none of them.
        trouble = _Trouble("worker start")
        while True:
            try:
                super().bootstrap(*args, **kwargs)
                trouble.ok()
                return
            except Exception as exc:
                error = _as_queue_error(exc)
                if error is None:
                    raise
                self._sleep_during_setup(trouble.failed(error))

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
        restored = jobs.sweep_queue()
        if restored:
            logger.info("queued jobs lost in a Redis outage enqueued again", extra={"jobs": restored})

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
                try:
                    self.check_for_suspension(burst)
                    if self.should_run_maintenance_tasks:
                        self.run_maintenance_tasks()
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
            try:
                self.teardown()
            except (jobs.QueueUnavailable, redis.exceptions.RedisError) as exc:
                if _as_queue_error(exc) is None:
                    raise
                self.log.warning("Worker %s: could not unregister (%s)", self.name, exc)
        return bool(completed)

    # --- internals --------------------------------------------------------------------------

    def _take(self) -> list[jobs.TakenJob]:
        self._beat_if_due()
        names = self.queue_names()
        # Aim a batch at WORKER_BATCH_SECONDS of work, judging by the slowest listened-to type.
        per_job = max((self._seconds_per_job.get(name, 1.0) for name in names), default=1.0)
        count = max(1, min(settings.WORKER_BATCH_SIZE, int(settings.WORKER_BATCH_SECONDS / max(per_job, 1e-6))))
        return jobs.take_jobs(queue_names=names, worker_name=self.name, count=count, lease=self._lease)

    def _run_batch(self, taken: list[jobs.TakenJob]) -> int:
        task_type = get_task_type(taken[0].task_name)
        outcomes: list[jobs.JobOutcome] = []
        with _LeaseKeeper(self, taken):
            if task_type.batch_handler is not None and len(taken) > 1:
                outcomes = self._run_together(task_type, taken)
            for job in taken[len(outcomes):]:
                if self._stop_requested:
                    break  # a warm stop: the running job has finished; hand the rest back
                outcomes.append(self._run_one(task_type, job))
            unstarted = taken[len(outcomes):]
            # Still under the lease keeper: jobs whose results wait for Redis stay leased to us.
            _retrying(lambda: jobs.finish_jobs(worker_name=self.name, outcomes=outcomes, unstarted=unstarted))
        self._learn(task_type, outcomes)
        self._log_batch(task_type, outcomes, len(unstarted))
        return len(outcomes)

    def _run_one(self, task_type: TaskType, job: jobs.TakenJob) -> jobs.JobOutcome:
        started = time.monotonic()
        try:
            if job.input is None:
                raise ValueError(f"job {job.job_id} has no input this service can read")
            with self.death_penalty_class(job.timeout, JobTimeoutException, job_id=job.job_id):
                result = task_type.handler(job.input)
        except JobTimeoutException:
            return jobs.JobOutcome(job, jobs.FAILED, time.monotonic() - started, exc_string="JobTimeoutException")
        except Exception:  # the job's failure, recorded for its client; the worker carries on
            return jobs.JobOutcome(job, jobs.FAILED, time.monotonic() - started, exc_string=traceback.format_exc())
        return jobs.JobOutcome(job, jobs.FINISHED, time.monotonic() - started, result=result)

    def _run_together(self, task_type: TaskType, taken: list[jobs.TakenJob]) -> list[jobs.JobOutcome]:
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
                results = task_type.batch_handler([job.input for job in taken])
            if len(results) != len(taken):
                raise ValueError(f"batch handler returned {len(results)} results for {len(taken)} inputs")
        except Exception:
            self.log.warning("batch handler of %s failed; running the jobs one by one", task_type.name, exc_info=True)
            return []
        each = (time.monotonic() - started) / len(taken)
        pairs = zip(taken, results, strict=True)
        return [jobs.JobOutcome(job, jobs.FINISHED, each, result=result) for job, result in pairs]

    def _learn(self, task_type: TaskType, outcomes: list[jobs.JobOutcome]) -> None:
        if outcomes:
            mean = sum(outcome.seconds for outcome in outcomes) / len(outcomes)
            previous = self._seconds_per_job.get(task_type.name, mean)
            self._seconds_per_job[task_type.name] = 0.5 * previous + 0.5 * mean

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
            time.sleep(min(0.1, deadline - time.monotonic()))


class _LeaseKeeper:
    """Renews a running batch's lease (and the worker's registration) every heartbeat, in a
    thread, so a long job keeps its jobs leased while a dead worker's expire within 3 beats."""

    def __init__(self, worker: WarmWorker, taken: list[jobs.TakenJob]) -> None:
        self._worker, self._taken = worker, taken
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="lease-keeper", daemon=True)

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        failing = False
        while not self._stop.wait(settings.WORKER_HEARTBEAT):
            try:
                jobs.extend_lease(taken=self._taken, lease=self._worker._lease)
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


def _stop_during_setup(signum, frame):
    logger.info("stop requested while loading models: exiting")
    raise SystemExit(0)
