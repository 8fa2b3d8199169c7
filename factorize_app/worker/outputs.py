"""A running job's streamed output, as its handler yields it (tasks/streaming.py): each piece is
checked against the limits in the handler's call (a piece refused fails the job), kept here, and
written to Redis (jobs.write_outputs: the job's output and an `output` event), one round trip for
every job with news:

- at once, in the handler's thread (as a piece comes, or at its next progress report), once the
  job has run OUTPUT_AT_ONCE_AFTER and the last write is OUTPUT_WRITE_INTERVAL old (the first
  piece of a long job goes out within a round trip);
- else by the lease keeper, at its next look (every 25 ms);
- and what is left when the handler returns (or is stopped) goes with the job's outcome, in the
  transaction that records it: a quick job's pieces cost no round trip of their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from typing import Any

import redis

from factorize_app import jobs
from factorize_app.tasks.streaming import BatchEmit, Emit

# A job's pieces are written as they come only after it has run this long (seconds): before,
# they wait for the keeper or the job's end, so quick jobs pay nothing for streaming.
OUTPUT_AT_ONCE_AFTER = 0.005
# ...and at most this often from the handler's thread (the keeper writes the rest).
OUTPUT_WRITE_INTERVAL = 0.02


class OutputStreams:
    """The pieces of a batch's jobs not yet written (the handler's thread adds and may write, the
    keeper writes; one write in flight at a time, so pieces reach Redis in order)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the tables below (held briefly)
        self._writing = threading.Lock()  # held while a write is in flight
        self._counts: dict[str, jobs.OutputCount] = {}  # job id -> its pieces and bytes this run
        self._pending: dict[str, tuple[int, list[str]]] = {}  # job id -> (first index, pieces) not yet written
        self._started: dict[str, float] = {}  # job id -> when its first emitter was made (monotonic)
        self._written_at = 0.0

    def emitter(self, job: jobs.TakenJob) -> Emit:
        """The `output` callable a handler's pieces are passed to: a new run of the job, whose
        output starts anew. Nothing is kept for a job until its first piece."""
        job_id, started = job.job_id, time.monotonic()
        self._counts.pop(job_id, None)

        def emit(piece: Any) -> None:
            with self._lock:
                count = self._counts.get(job_id)
                if count is None:
                    count = self._counts[job_id] = jobs.OutputCount()
                    self._started[job_id] = started
                    self._pending.pop(job_id, None)
                text = count.add(piece)  # OutputLimitExceeded / OutputNotJSON: the job's failure
                self._pending.setdefault(job_id, (count.pieces - 1, []))[1].append(text)
                now = time.monotonic()
                at_once = now - started >= OUTPUT_AT_ONCE_AFTER and now - self._written_at >= OUTPUT_WRITE_INTERVAL
            if at_once:
                self.write(blocking=False)

        return emit

    def batch_emitter(self, running: list[jobs.TakenJob]) -> BatchEmit:
        """For a batch handler: output(index, piece), index the job's place in `running`."""
        emits = [self.emitter(job) for job in running]

        def emit(index: int, piece: Any) -> None:
            emits[index](piece)

        return emit

    def write_soon(self) -> None:
        """From the handler's thread (its progress reports): the pieces waiting for their job to
        have run OUTPUT_AT_ONCE_AFTER, once it has, at most every OUTPUT_WRITE_INTERVAL."""
        if self._pending and time.monotonic() - self._written_at >= OUTPUT_WRITE_INTERVAL:
            self.write(blocking=False, after=OUTPUT_AT_ONCE_AFTER)

    def write_if_due(self) -> None:
        """The lease keeper's call: the pieces of jobs past OUTPUT_AT_ONCE_AFTER, one attempt."""
        self.write(blocking=False, after=OUTPUT_AT_ONCE_AFTER)

    def write(self, *, blocking: bool, after: float = 0.0) -> None:
        """Write what is pending (of jobs that have run `after` seconds); a failed write keeps it
        for the next (progress and outputs are retried; the job's end records what is left)."""
        if not self._writing.acquire(blocking=blocking):
            return  # a write is in flight: it or the next one takes these pieces
        try:
            with self._lock:
                now = time.monotonic()
                due = {
                    job_id: jobs.Pieces(first, tuple(pieces))
                    for job_id, (first, pieces) in self._pending.items()
                    if now - self._started.get(job_id, now) >= after
                }
                for job_id in due:
                    del self._pending[job_id]
                if due:
                    self._written_at = now
            if not due:
                return
            written = False
            try:
                with contextlib.suppress(jobs.QueueUnavailable, redis.exceptions.RedisError):
                    jobs.write_outputs(pending=due)
                    written = True
            finally:
                if not written:  # back in front of what came meanwhile
                    with self._lock:
                        for job_id, pieces in due.items():
                            later = self._pending.get(job_id, (0, []))[1]
                            self._pending[job_id] = (pieces.first, [*pieces.pieces, *later])
        finally:
            self._writing.release()

    def take(self, job_id: str) -> jobs.Pieces | None:
        """The job's pieces not yet written, once its handler call is over (recorded with its
        outcome); waits for a write in flight, so that nothing is written after them."""
        if job_id not in self._counts:  # it streamed nothing (or was taken already): no lock taken
            return None
        with self._writing, self._lock:
            self._counts.pop(job_id, None)
            self._started.pop(job_id, None)
            pending = self._pending.pop(job_id, None)
        return jobs.Pieces(pending[0], tuple(pending[1])) if pending else None

    def discard(self, running: list[jobs.TakenJob]) -> None:
        """Forget the pieces of jobs whose call failed (they run again, streaming anew)."""
        for job in running:
            self.take(job.job_id)

    def with_output(self, outcome: jobs.JobOutcome) -> jobs.JobOutcome:
        """The outcome carrying its job's pieces not yet written (none for a job queued again:
        its next run streams anew)."""
        pieces = self.take(outcome.job.job_id)
        if pieces is None or outcome.status == jobs.QUEUED:
            return outcome
        return dataclasses.replace(outcome, output=pieces)
