"""The lease keeper: the thread that keeps a running batch's jobs this worker's.

A taken job is leased (jobs.take_jobs): if its worker dies, the lease expires within three
heartbeats and RQ's maintenance in another worker recovers it. While a job runs, however long,
the keeper renews the leases of the batch's jobs and the worker's registration every heartbeat;
between beats (every KEEPER_CHECK) it records results due, writes progress, stops the jobs asked
to stop (interruption.stop_what_is_asked) and hands back jobs a long one holds up.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from django.conf import settings

from factorize_app import jobs, watchdog
from factorize_app.worker.batch import Batch
from factorize_app.worker.interruption import STOP_CHECK, stop_what_is_asked
from factorize_app.worker.progress import ProgressReports

if TYPE_CHECKING:
    from factorize_app.worker.loop import WarmWorker

logger = logging.getLogger("factorize_app.worker")

# How often the keeper looks for results due to be recorded and jobs held up by a long one.
KEEPER_CHECK = 0.025


def lease_seconds() -> int:
    """How long a taken job stays this worker's without a renewal: three heartbeats."""
    return 3 * settings.WORKER_HEARTBEAT


class LeaseKeeper:
    """The worker's one keeper thread: `with keeper.keeping(batch, progress):` around each batch's
    run. The thread is started once and idles between batches, so that starting a batch (on the
    way from a submit to its result) costs no thread start and no join; when the block ends, no
    step of the keeper touches that batch any more."""

    def __init__(self, worker: WarmWorker) -> None:
        self._worker = worker
        self._changed = threading.Condition()
        self._kept: tuple[Batch, ProgressReports] | None = None  # the batch being run, if any
        self._ticking = False  # a step on the kept batch is under way
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def keeping(self, batch: Batch, progress: ProgressReports) -> Iterator[None]:
        kept = (batch, progress)
        with self._changed:
            if self._thread is None or not self._thread.is_alive():  # first batch, or after a fork
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()
            self._kept = kept
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self._kept = None
                self._changed.notify_all()
                self._changed.wait_for(lambda: not self._ticking)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._kept is not None)
                kept = self._kept
            self._keep(kept)

    def _keep(self, kept: tuple[Batch, ProgressReports]) -> None:
        batch, progress = kept
        failing = False
        next_beat = time.monotonic() + settings.WORKER_HEARTBEAT
        next_stop_check = 0.0
        while True:
            with self._changed:
                if self._changed.wait_for(lambda: self._kept is not kept, KEEPER_CHECK):
                    return  # the batch's run ended
                self._ticking = True
            try:
                watchdog.stamp()  # a job runs (however long): the process is not stuck
                batch.record_if_due()
                progress.write_if_due()
                if time.monotonic() >= next_stop_check or batch.deadline_passed():
                    next_stop_check = time.monotonic() + STOP_CHECK
                    stop_what_is_asked(self._worker, batch)
                batch.hand_back_if_held_up()
                if time.monotonic() < next_beat:
                    continue
                next_beat = time.monotonic() + settings.WORKER_HEARTBEAT
                try:
                    jobs.extend_lease(taken=batch.leased(), lease=lease_seconds())
                    self._worker.heartbeat()
                    failing = False
                except Exception as exc:  # an outage: the next beat tries again (said once)
                    if not failing:
                        logger.warning("could not renew the lease", extra={"error": str(exc)})
                    failing = True
            finally:
                with self._changed:
                    self._ticking = False
                    self._changed.notify_all()
