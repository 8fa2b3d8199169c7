"""One batch's jobs on their way from taken to recorded: a state machine two threads share.

The work loop runs the handlers; the lease keeper, in its own thread, records results by time
(not when the batch ends), stops the jobs asked to stop and hands back to the queue the jobs a
long one holds up. Each job of the batch is in one named state (`InBatch`);
every change goes through `Batch._move`, checked against `TRANSITIONS`, under the batch's one
lock. Redis is written outside the lock, while the jobs concerned are in an in-flight state
(RECORDING, HANDING_BACK) that no other step takes them from; a failed write moves them back,
and the batch's end waits for the writes in flight, so that none is left behind unrecorded.

    WAITING ──start──> RUNNING or IN_BATCH_CALL ──end──> ENDED ──write──> RECORDING ──> RECORDED
      │  ^                  │ (the call failed,             ^                │
      │  └────unstart───────┘  or a warm stop)              └──write failed──┘
      ├──stopped before it started──> ENDED (canceled)
      └──hand back──> HANDING_BACK ──> HANDED_BACK
                           └──write failed──> WAITING

A job that must not run (stopped before it was taken, or past its deadline) is started and ended
at once, with no handler call.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Iterable

from django.conf import settings

from factorize_app import jobs
from factorize_app.worker.outage import retrying

logger = logging.getLogger("factorize_app.worker")

# Results finished within this long of each other are recorded in one transaction.
RESULT_FLUSH_SECONDS = 0.05


def hand_back_after() -> float:
    """A job running this long hands the batch's unstarted jobs back to the queue: five times
    the work a whole batch aims at (1 s by default)."""
    return 5 * settings.WORKER_BATCH_SECONDS


class InBatch(enum.Enum):
    """Where one job of the batch is, from taken to recorded or handed back (the job service's
    `JobState` is another thing: what a client sees of a job)."""

    # Taken and leased, not started: a stop ends it at once; the keeper may hand it back.
    WAITING = "waiting"
    # Alone in its handler call: a stop interrupts the call (SIGUSR2, JobStopped).
    RUNNING = "running"
    # In one batch-handler call with the others: a stop takes effect when the call returns.
    IN_BATCH_CALL = "in a batch call"
    # Its outcome is known, kept here (and still leased) until Redis records it.
    ENDED = "ended"
    # Its outcome is being written by one thread; no other takes it meanwhile.
    RECORDING = "recording"
    # Recorded in Redis: no longer this worker's.
    RECORDED = "recorded"
    # Being put back at the front of its queue by one thread.
    HANDING_BACK = "handing back"
    # Back in its queue, unstarted, for any worker.
    HANDED_BACK = "handed back"


TRANSITIONS: dict[InBatch, frozenset[InBatch]] = {
    InBatch.WAITING: frozenset({InBatch.RUNNING, InBatch.IN_BATCH_CALL, InBatch.ENDED, InBatch.HANDING_BACK}),
    InBatch.RUNNING: frozenset({InBatch.ENDED, InBatch.WAITING}),
    InBatch.IN_BATCH_CALL: frozenset({InBatch.ENDED, InBatch.WAITING}),
    InBatch.ENDED: frozenset({InBatch.RECORDING}),
    InBatch.RECORDING: frozenset({InBatch.RECORDED, InBatch.ENDED}),
    InBatch.RECORDED: frozenset(),
    InBatch.HANDING_BACK: frozenset({InBatch.HANDED_BACK, InBatch.WAITING}),
    InBatch.HANDED_BACK: frozenset(),
}
CALLED = (InBatch.RUNNING, InBatch.IN_BATCH_CALL)
IN_FLIGHT = (InBatch.RECORDING, InBatch.HANDING_BACK)
# The jobs whose leases the keeper renews (those in flight are being settled by their writer).
LEASED = (InBatch.WAITING, *CALLED, InBatch.ENDED)


class InvalidTransition(RuntimeError):
    """A step asked for a change `TRANSITIONS` does not allow: a bug in the worker."""


@dataclasses.dataclass(eq=False)
class _Entry:
    index: int  # its place in taken order, the order waiting jobs start in
    job: jobs.TakenJob
    state: InBatch = InBatch.WAITING
    outcome: jobs.JobOutcome | None = None
    stop: str | None = None  # why it was asked to stop while called; kept if it waits again


class Batch:
    """The jobs of one batch, in taken order, with the state of each."""

    def __init__(self, worker_name: str, taken: list[jobs.TakenJob]) -> None:
        self.worker_name = worker_name
        self._lock = threading.Lock()  # the one lock
        self._settled = threading.Condition(self._lock)  # notified when a write in flight settles
        self._entries = [_Entry(index, job) for index, job in enumerate(taken)]
        # Kept by _move, so that a job's steps cost the same in a batch of 10 or of 1,000:
        self._count = collections.Counter({InBatch.WAITING: len(taken)})  # jobs in each state
        self._by_id = {entry.job.job_id: entry for entry in self._entries}
        self._first_waiting = 0  # no job before this index is waiting
        self._ended: list[_Entry] = []  # in the order their outcomes came
        self._called_at = 0.0  # monotonic: when the current handler call started
        self._first_unrecorded_at = 0.0

    # --- the transitions: every change of state, under the lock -------------------------------

    def _move(self, entries: Iterable[_Entry], to: InBatch) -> None:
        """All of `entries` move, or none (a step moves its jobs together)."""
        entries = list(entries)
        for entry in entries:
            if to not in TRANSITIONS[entry.state]:
                raise InvalidTransition(f"job {entry.job.job_id}: {entry.state.value} -> {to.value}")
        settled = False
        for entry in entries:
            settled = settled or entry.state in IN_FLIGHT
            self._count[entry.state] -= 1
            self._count[to] += 1
            entry.state = to
            if to is InBatch.WAITING:
                self._first_waiting = min(self._first_waiting, entry.index)
        if settled:
            self._settled.notify_all()  # finish() waits for writes in flight

    def _end(self, entry: _Entry, outcome: jobs.JobOutcome) -> None:
        if not self._count[InBatch.ENDED]:
            self._first_unrecorded_at = time.monotonic()
        entry.outcome = outcome
        self._move([entry], InBatch.ENDED)
        self._ended.append(entry)

    def _in(self, *states: InBatch) -> list[_Entry]:
        if not any(self._count[state] for state in states):
            return []
        return [entry for entry in self._entries if entry.state in states]

    def _find(self, job_id: str, *states: InBatch) -> _Entry | None:
        entry = self._by_id.get(job_id)
        return entry if entry is not None and entry.state in states else None

    def _next_waiting(self) -> _Entry | None:
        for index in range(self._first_waiting, len(self._entries)):
            if self._entries[index].state is InBatch.WAITING:
                self._first_waiting = index
                return self._entries[index]
        self._first_waiting = len(self._entries)
        return None

    def _unrecorded(self) -> list[_Entry]:
        if not self._count[InBatch.ENDED]:
            return []
        return [entry for entry in self._ended if entry.state is InBatch.ENDED]

    # --- the work loop's steps ----------------------------------------------------------------

    def next_job(self) -> jobs.TakenJob | None:
        """The first waiting job, now running alone."""
        with self._lock:
            entry = self._next_waiting()
            if entry is None:
                return None
            self._move([entry], InBatch.RUNNING)
            self._called_at = time.monotonic()
            return entry.job

    def start_together(self) -> list[jobs.TakenJob]:
        """Every waiting job at once (a batch handler's one call)."""
        with self._lock:
            waiting = self._in(InBatch.WAITING)
            self._move(waiting, InBatch.IN_BATCH_CALL)
            self._called_at = time.monotonic()
            return [entry.job for entry in waiting]

    def unstart(self, taken: list[jobs.TakenJob]) -> None:
        """Jobs started but not run (their batch call failed, or a warm stop) wait again."""
        ids = {job.job_id for job in taken}
        with self._lock:
            self._move([entry for entry in self._in(*CALLED) if entry.job.job_id in ids], InBatch.WAITING)

    def record(self, outcomes: list[jobs.JobOutcome]) -> None:
        """Keep the outcomes of called jobs; record every unrecorded one once the oldest has
        waited long enough."""
        with self._lock:
            for outcome in outcomes:
                entry = self._find(outcome.job.job_id, *CALLED)
                if entry is None:
                    raise InvalidTransition(f"job {outcome.job.job_id}: an outcome for a job not called")
                self._end(entry, outcome)
            due = time.monotonic() - self._first_unrecorded_at >= RESULT_FLUSH_SECONDS
        if due:
            self._write_unrecorded(retry=True)

    def stopped_meanwhile(self, outcomes: list[jobs.JobOutcome]) -> list[jobs.JobOutcome]:
        """A batch handler's outcomes, with the jobs stopped during its call ended canceled."""
        with self._lock:
            wanted = {entry.job.job_id: entry.stop for entry in self._entries if entry.stop is not None}
        return [canceled(o, wanted[o.job.job_id]) if o.job.job_id in wanted else o for o in outcomes]

    def finish(self) -> None:
        """Record what is left and hand back what never started (a warm stop) in one transaction,
        which also marks the worker idle; first wait for the keeper's write in flight, if any, so
        that what it fails to write is here to be written."""
        with self._lock:
            self._settled.wait_for(lambda: not self._in(*IN_FLIGHT))
            unrecorded, waiting = self._unrecorded(), self._in(InBatch.WAITING)
            self._move(unrecorded, InBatch.RECORDING)
            self._move(waiting, InBatch.HANDING_BACK)
        outcomes, unstarted = [entry.outcome for entry in unrecorded], [entry.job for entry in waiting]
        retrying(
            lambda: jobs.finish_jobs(worker_name=self.worker_name, outcomes=outcomes, unstarted=unstarted),
            "recording a batch",
        )
        with self._lock:
            self._move(unrecorded, InBatch.RECORDED)
            self._move(waiting, InBatch.HANDED_BACK)

    @property
    def outcomes(self) -> list[jobs.JobOutcome]:
        """Every outcome so far, in the order they came."""
        with self._lock:
            return [entry.outcome for entry in self._ended]

    @property
    def handed_back(self) -> int:
        with self._lock:
            return len(self._in(InBatch.HANDED_BACK))

    # --- the lease keeper's steps -------------------------------------------------------------

    def running(self) -> list[jobs.TakenJob]:
        with self._lock:
            return [entry.job for entry in self._in(*CALLED)]

    def running_alone(self) -> tuple[jobs.TakenJob | None, float]:
        """The job running alone in its handler call, and since when (monotonic); None if none."""
        with self._lock:
            alone = self._in(InBatch.RUNNING)
            return (alone[0].job, self._called_at) if alone else (None, 0.0)

    def leased(self) -> list[jobs.TakenJob]:
        """The jobs this worker still holds: unstarted, running, or done but not yet recorded."""
        with self._lock:
            return [entry.job for entry in self._in(*LEASED)]

    def stop(self, job_id: str, reason: str) -> bool:
        """A stop asked for one of this batch's jobs: a waiting one ends canceled at once; a
        called one is remembered, and True says to interrupt it (a job alone in its handler
        call; one of a batch handler's call ends canceled when the call returns)."""
        with self._lock:
            entry = self._find(job_id, InBatch.WAITING, *CALLED)
            if entry is None:
                return False
            if entry.state is InBatch.WAITING:
                self._end(entry, jobs.JobOutcome(entry.job, jobs.CANCELED, 0.0, exc_string=reason))
                return False
            entry.stop = reason
            return entry.state is InBatch.RUNNING

    def stops_pending(self) -> dict[str, str]:
        """Stops asked for the job still running alone (to interrupt again if the last signal
        came between two handler calls)."""
        with self._lock:
            return {entry.job.job_id: entry.stop for entry in self._in(InBatch.RUNNING) if entry.stop is not None}

    def deadline_passed(self) -> bool:
        """A called job is past its Cancel-After deadline and not yet asked to stop: the lease
        keeper stops it on that tick, not at its next look for stop requests."""
        with self._lock:
            return any(past_deadline(entry.job) and entry.stop is None for entry in self._in(*CALLED))

    def set_deadline(self, job_id: str, deadline: float | None) -> None:
        """A called job's deadline as Redis has it now (a shared job's moves with its owners)."""
        with self._lock:
            for entry in self._in(*CALLED):
                if entry.job.job_id == job_id:
                    entry.job = dataclasses.replace(entry.job, deadline=deadline)

    def hand_back_if_held_up(self) -> None:
        """When the running call has run long, the jobs waiting behind it go back to the front of
        their queue, for any worker; a failed write leaves them waiting here."""
        with self._lock:
            called = any(self._count[state] for state in CALLED)
            if not called or time.monotonic() - self._called_at < hand_back_after():
                return
            waiting = self._in(InBatch.WAITING)
            if not waiting:
                return
            self._move(waiting, InBatch.HANDING_BACK)
        unstarted = [entry.job for entry in waiting]
        done = False
        try:
            jobs.finish_jobs(worker_name=self.worker_name, outcomes=[], unstarted=unstarted, batch_done=False)
            done = True
        except jobs.QueueUnavailable:
            pass
        finally:  # settled whatever happened: finish() waits for it
            with self._lock:
                self._move(waiting, InBatch.HANDED_BACK if done else InBatch.WAITING)
        if done:
            logger.info("handed back jobs held up by a long one", extra={"jobs": len(waiting)})

    def record_if_due(self) -> None:
        """While a job runs: one attempt, so that a Redis refusing writes never stops the keeper
        renewing leases; what it could not record waits for the next."""
        with self._lock:
            due = self._count[InBatch.ENDED] and time.monotonic() - self._first_unrecorded_at >= RESULT_FLUSH_SECONDS
        if due:
            self._write_unrecorded(retry=False)

    def _write_unrecorded(self, *, retry: bool) -> None:
        with self._lock:
            unrecorded = self._unrecorded()
            self._move(unrecorded, InBatch.RECORDING)
        if not unrecorded:
            return
        outcomes = [entry.outcome for entry in unrecorded]
        record = lambda: jobs.finish_jobs(worker_name=self.worker_name, outcomes=outcomes, batch_done=False)  # noqa: E731
        done = False
        try:
            if retry:
                retrying(record, "recording a batch")
            else:
                record()
            done = True
        except jobs.QueueUnavailable:
            pass
        finally:  # settled whatever happened: finish() waits for it
            with self._lock:
                if done:
                    self._move(unrecorded, InBatch.RECORDED)
                else:  # the batch's end records them, or this tries again in a second
                    self._move(unrecorded, InBatch.ENDED)
                    self._first_unrecorded_at = time.monotonic() + 1.0


def canceled(outcome: jobs.JobOutcome, reason: str) -> jobs.JobOutcome:
    return jobs.JobOutcome(outcome.job, jobs.CANCELED, outcome.seconds, exc_string=reason)


def past_deadline(job: jobs.TakenJob) -> bool:
    return job.deadline is not None and time.time() > job.deadline
