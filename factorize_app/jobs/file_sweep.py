"""Expired jobs' files deleted, by the workers' maintenance (worker/base.py), in bounded sweeps.

Every worker's maintenance asks (every WORKER_MAINTENANCE_INTERVAL); the first to take a lock in
Redis that lasts FILES_SWEEP_INTERVAL sweeps, so the deployment sweeps at most that often however
many workers run. A sweep deletes at most FILES_SWEEP_LIMIT files (a backlog goes at that pace)
and stops after SWEEP_SECONDS, well within the worker watchdog's patience; `files.remove_expired`
makes each deletion safe against a store of the same bytes meanwhile. A storage that fails is
logged and tried again at the next sweep: it never stops a worker. Files' records and the
upload budgets' counters expire in Redis by themselves.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.files.storage import storages

from factorize_app.jobs import files, keys
from factorize_app.jobs.connection import redis_connection
from factorize_app.jobs.errors import translate_outages

logger = logging.getLogger("factorize_app.jobs")

SWEEP_SECONDS = 5.0
# A temporary file of a directory storage's write older than this was left by a writer that died.
PARTIAL_AGE = 3600


@translate_outages
def sweep_files(*, now: float | None = None) -> int:
    """Delete expired files if no process did within FILES_SWEEP_INTERVAL; answers how many."""
    if not redis_connection().set(keys.FILE_SWEEP_LOCK, time.time(), nx=True, ex=settings.FILES_SWEEP_INTERVAL):
        return 0
    removed = 0
    deadline = time.monotonic() + SWEEP_SECONDS
    try:
        while removed < settings.FILES_SWEEP_LIMIT and time.monotonic() < deadline:
            batch = files.remove_expired(now=now, deadline=deadline)
            removed += batch
            if batch < files.REMOVE_BATCH:
                break
        remove_partials = getattr(storages[settings.JOB_FILES_STORAGE], "remove_partials", None)  # a directory
        if remove_partials is not None:
            remove_partials(older_than=PARTIAL_AGE)
    except (files.StorageUnavailable, OSError) as error:
        logger.warning(
            "expired files could not be deleted: the file storage failed (the next sweep tries again)",
            extra={"error": str(error), "files": removed},
        )
    if removed:
        logger.info("expired files deleted", extra={"files": removed})
    return removed

