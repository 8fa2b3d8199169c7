"""Stopping a running job without stopping the worker, and stopping the worker while it loads.

A job is stopped when its client cancels it (DELETE /jobs/<id>, or RQ's stop command from
django-rq's Stop button or `send_stop_job_command`), when its Cancel-After deadline passes, or
when its client holds more than its share of the workers (it is queued again, not failed). The
lease keeper decides which (`stop_what_is_asked`, every STOP_CHECK); the worker's main thread is
interrupted inside the handler by a signal, so the model stays loaded and the next job starts.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rq.command import handle_command, parse_payload
from rq.timeouts import UnixSignalDeathPenalty

from factorize_app import jobs
from factorize_app.worker.batch import Batch, hand_back_after, past_deadline

if TYPE_CHECKING:
    from factorize_app.worker.loop import WarmWorker

logger = logging.getLogger("factorize_app.worker")

# How often a busy worker looks for requests to stop its running jobs (well within the 1 s promised).
STOP_CHECK = 0.2
# Why a running job is stopped when its client gives the worker back (it is queued again).
YIELDED = "handed back: another client's job waited for a worker"


class JobStopped(BaseException):
    """Raised in the main thread inside a running handler that was asked to stop. Not an
    Exception, so a handler's own `except Exception` does not swallow it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Interruptible:
    """The model worker's part in stopping jobs: the signal that interrupts a handler call, and
    RQ's stop commands turned into the service's own stop requests."""

    _interrupt: tuple[str, str] | None = None  # (job id, why) asked by the keeper, not yet raised
    _interruptible: str | None = None  # the job whose handler call runs now, alone

    def interrupt(self, job_id: str, reason: str) -> None:
        """Stop the running job `job_id` in this process (the lease keeper's call, from its thread):
        SIGUSR2 makes the main thread raise JobStopped inside the handler, between two Python
        bytecodes, so the model stays loaded and the worker takes its next job. A handler deep in
        one long C call stops when that call returns."""
        self._interrupt = (job_id, reason)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR2)

    @contextlib.contextmanager
    def handler_call(self, job_id: str) -> Iterator[None]:
        """The handler call of `job_id` (alone): the only place a stop signal raises."""
        self._interruptible = job_id
        try:
            yield
        finally:
            self._interruptible = None

    def _on_interrupt(self, signum, frame) -> None:
        wanted = self._interrupt
        if wanted is not None and wanted[0] == self._interruptible:
            self._interrupt = None
            raise JobStopped(wanted[1])

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        signal.signal(signal.SIGUSR2, self._on_interrupt)

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


def stop_what_is_asked(worker: WarmWorker, batch: Batch) -> None:
    """The lease keeper's step: stop requests (DELETE of a running job), passed deadlines and
    fair-share yields of this batch's jobs; a cancel asked meanwhile wins over a yield."""
    try:
        asked = jobs.take_stop_requests(worker_name=worker.name)
    except jobs.QueueUnavailable:
        asked = {}
    wanted = {job_id: jobs.CANCELED_ERROR for job_id, stop in asked.items() if stop} | batch.stops_pending()
    running = batch.running()
    # A shared job's deadline is its owners' latest: read again when an owner withdrew, or
    # when the one taken with it passes (a later owner may have lifted or extended it).
    reread = [job.job_id for job in running if job.job_id in asked or past_deadline(job)]
    if reread:
        with contextlib.suppress(jobs.QueueUnavailable):  # else the deadline taken with it holds
            for job_id, deadline in jobs.job_deadlines(job_ids=reread).items():
                batch.set_deadline(job_id, deadline)
        running = batch.running()
    for job in running:
        if past_deadline(job):
            wanted.setdefault(job.job_id, jobs.DEADLINE_CANCELED_ERROR)
    for job_id, reason in _yield_if_fair(worker.name, batch).items():
        wanted.setdefault(job_id, reason)
    for job_id, reason in wanted.items():
        if batch.stop(job_id, reason):
            worker.interrupt(job_id, reason)


def _yield_if_fair(worker_name: str, batch: Batch) -> dict[str, str]:
    """A job running alone for long is handed back when its client holds more than its fair
    share of the type's workers, or every worker runs a long job and its client is the
    heaviest, while another client's job waits (jobs.yield_worker)."""
    running, since = batch.running_alone()
    ran = time.monotonic() - since
    if running is None or ran < hand_back_after():
        return {}
    try:
        started_at = time.time() - ran
        if jobs.yield_worker(
            worker_name=worker_name, job=running, started_at=started_at, ran=ran, grace=hand_back_after()
        ):
            logger.info("giving the worker back to another client", extra={"job_id": running.job_id})
            return {running.job_id: YIELDED}
    except jobs.QueueUnavailable:
        pass
    return {}


class JobAlarm(UnixSignalDeathPenalty):
    """RQ's time limit on a handler call (SIGALRM), without RQ's two handler swaps per call:
    the one handler is installed once and raises for the call armed now, if any (a trivial
    job's time limit cost as much as the job)."""

    _armed: JobAlarm | None = None

    def setup_death_penalty(self) -> None:
        if signal.getsignal(signal.SIGALRM) is not JobAlarm._on_alarm:  # once (again, if anything replaced it)
            signal.signal(signal.SIGALRM, JobAlarm._on_alarm)
        JobAlarm._armed = self
        signal.alarm(self._timeout)

    def cancel_death_penalty(self) -> None:
        signal.alarm(0)
        JobAlarm._armed = None

    @staticmethod
    def _on_alarm(signum, frame) -> None:
        armed = JobAlarm._armed
        if armed is not None:
            JobAlarm._armed = None
            armed.handle_death_penalty(signum, frame)


def _stop_during_setup(signum, frame):
    logger.info("stop requested while loading models: exiting")
    raise SystemExit(0)


@contextlib.contextmanager
def stoppable_during_setup() -> Iterator[None]:
    """Until RQ installs its warm-shutdown handlers (after bootstrap), a stop request must still
    end the process, even as a container's PID 1 (which ignores SIGTERM)."""
    previous = signal.signal(signal.SIGTERM, _stop_during_setup)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
