"""The lease keeper: the thread that keeps a running batch's jobs this worker's.

A taken job is leased (jobs.take_jobs): if its worker dies, the lease expires within three
heartbeats and RQ's maintenance in another worker recovers it. While a job runs, however long,
the keeper renews the leases of the batch's jobs and the worker's registration every heartbeat;
between beats (every KEEPER_CHECK) it records results due, writes progress, stops the jobs asked
to stop (interruption.stop_what_is_asked) and hands back jobs a long one holds up.
"""

from __future__ import annotations

import logging
import threading
import time
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
    """`with LeaseKeeper(worker, batch):` around a batch's run; the thread ends with the block."""

    def __init__(self, worker: WarmWorker, batch: Batch, progress: ProgressReports) -> None:
        self._worker, self._batch, self._progress = worker, batch, progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name="lease-keeper", daemon=True)

    def __enter__(self) -> None:
        self._thread.start()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _keep(self) -> None:
        failing = False
        next_beat = time.monotonic() + settings.WORKER_HEARTBEAT
        next_stop_check = 0.0
        while not self._stop.wait(KEEPER_CHECK):
            watchdog.stamp()  # a job runs (however long): the process is not stuck
            self._batch.record_if_due()
            self._progress.write_if_due()
            if time.monotonic() >= next_stop_check or self._batch.deadline_passed():
                next_stop_check = time.monotonic() + STOP_CHECK
                stop_what_is_asked(self._worker, self._batch)
            self._batch.hand_back_if_held_up()
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + settings.WORKER_HEARTBEAT
            try:
                jobs.extend_lease(taken=self._batch.leased(), lease=lease_seconds())
                self._worker.heartbeat()
                failing = False
            except Exception as exc:  # an outage: the next beat tries again (said once)
                if not failing:
                    logger.warning("could not renew the lease", extra={"error": str(exc)})
                failing = True
