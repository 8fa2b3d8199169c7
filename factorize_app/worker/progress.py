"""A running job's progress, as its handler reports it: remembered in memory by the handler's
call (no I/O in the handler's time), written to Redis by the lease keeper at most every
PROGRESS_INTERVAL, one round trip for every job with news."""

from __future__ import annotations

import contextlib
import threading
import time

from factorize_app import jobs
from factorize_app.tasks.registry import Progress
from factorize_app.worker.outputs import OutputStreams

# A running job's progress is written at most this often, however often its handler reports.
PROGRESS_INTERVAL = 0.25
PROGRESS_MESSAGE_MAX = 200


class ProgressReports:
    """The latest report of each of a batch's jobs not yet written (the handler's thread writes
    here, the lease keeper's reads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, dict] = {}  # job id -> latest report not yet written
        self._written_at = 0.0
        self.outputs = OutputStreams()  # the batch's streamed outputs, written on the same ticks

    def reporter(self, running: list[jobs.TakenJob]) -> Progress:
        """The `progress` callable a handler gets. For a batch handler, the report is every job's
        of the batch."""

        def progress(fraction: float | None = None, message: str = "") -> None:
            value = {
                "fraction": None if fraction is None else min(1.0, max(0.0, float(fraction))),
                "message": str(message)[:PROGRESS_MESSAGE_MAX],
            }
            with self._lock:
                for job in running:
                    self._latest[job.job_id] = value
            self.outputs.write_soon()  # pieces held while the job was young: out now, not at the keeper's tick

        return progress

    def write_if_due(self) -> None:
        """The lease keeper's call: one attempt (and the streamed outputs due)."""
        self.outputs.write_if_due()
        with self._lock:
            if not self._latest or time.monotonic() - self._written_at < PROGRESS_INTERVAL:
                return
            progress, self._latest = self._latest, {}
            self._written_at = time.monotonic()
        with contextlib.suppress(jobs.QueueUnavailable):  # progress is a hint: the next report tries again
            jobs.report_progress(progress=progress)
