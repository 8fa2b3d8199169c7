"""The worker class: loads each listened-to task type's model once, then runs jobs in-process.

RQ's default `Worker` forks a child per job, which would throw a warm model (and any
CUDA context) away after every job; `SimpleWorker` keeps everything in one process.
"""

from __future__ import annotations

import logging
import signal
import time

from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker

from factorize_app import jobs
from factorize_app.tasks import ensure_setup, get_task_type

logger = logging.getLogger("factorize_app.worker")


class WarmWorker(SimpleWorker):
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
        super().bootstrap(*args, **kwargs)

    def execute_job(self, job: Job, queue: Queue) -> None:
        # An id whose job expired can linger in the queue list; if the same input was then
        # submitted again, the id is in the list twice. Run each job only once.
        if job.get_status(refresh=False) != "queued":  # as read when the job was dequeued
            self.log.info("skipping %s: already %s", job.id, job.get_status(refresh=False).value)
            if len(self.queues) == 1:
                self.connection.lrem(queue.intermediate_queue_key, 1, job.id)
            return
        event = {"job_id": job.id, "task_type": queue.name}
        logger.info("job started", extra=event)
        started = time.monotonic()
        super().execute_job(job, queue)
        duration = time.monotonic() - started
        status = job.get_status(refresh=False).value  # what perform_job recorded
        level = logging.INFO if status == "finished" else logging.WARNING
        logger.log(level, f"job {status}", extra={**event, "status": status, "duration_s": round(duration, 6)})
        latest = None if status == "finished" else job.latest_result()
        jobs.record_outcome(
            job_id=job.id,
            task_name=queue.name,
            status=status,
            seconds=duration,
            # RQ keeps the return value on the job after perform_job; reading it back costs a round trip.
            result=job._result if status == "finished" else None,
            exc_string=latest.exc_string if latest else None,
            timeout=job.timeout,
        )

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        super().prepare_job_execution(job, remove_from_intermediate_queue)
        jobs.job_started(task_name=job.origin, job_id=job.id)


def _stop_during_setup(signum, frame):
    logger.info("stop requested while loading models: exiting")
    raise SystemExit(0)
