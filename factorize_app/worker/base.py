"""The RQ worker both of this service's workers are: the model worker (`WarmWorker`) and the
webhooks worker (`factorize_app.webhooks.worker.WebhookWorker`) build on `ServiceWorker`.

RQ's `SimpleWorker` runs jobs in its own process (no fork per job). On top of it, what both
need: their timings from settings, registry cleaning that a killed cleaner does not block for
15 minutes, and a start-up that can be retried after an outage without repeating a step.
"""

from __future__ import annotations

from django.conf import settings
from rq import worker_registration
from rq.registry import clean_registries
from rq.utils import now as rq_now
from rq.worker import SimpleWorker

from factorize_app import jobs


class ServiceWorker(SimpleWorker):
    """RQ's SimpleWorker, heartbeating every WORKER_HEARTBEAT, with maintenance every
    WORKER_MAINTENANCE_INTERVAL (both unless the caller says otherwise)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("maintenance_interval", settings.WORKER_MAINTENANCE_INTERVAL)
        kwargs.setdefault("job_monitoring_interval", settings.WORKER_HEARTBEAT)
        super().__init__(*args, **kwargs)

    def clean_registries(self) -> None:
        """RQ's registry cleaning (each queue's dead workers' jobs retried or failed) under a lock
        that a killed cleaner does not keep for 15 minutes (jobs.take_cleaning_lock)."""
        for queue in self.queues:
            if jobs.take_cleaning_lock(queue_name=queue.name, worker_name=self.name):
                self.log.info("Worker %s: cleaning registries for queue: %s", self.name, queue.name)
                clean_registries(queue, self._exc_handlers)
                worker_registration.clean_worker_registry(queue)
                queue.intermediate_queue.cleanup(self, queue)
                queue.release_maintenance_lock()
        self.last_cleaned_at = rq_now()

    def run_maintenance_tasks(self) -> None:
        """RQ's maintenance, then expired files deleted (at most once per FILES_SWEEP_INTERVAL across
        the deployment, whichever worker asks first)."""
        super().run_maintenance_tasks()
        jobs.sweep_files()

    # A bootstrap that an outage interrupted is retried whole: these two of its steps are made
    # idempotent, so a retry that comes after some of RQ's steps went through repeats none of them.

    def register_birth(self) -> None:
        if not getattr(self, "_registered", False):
            super().register_birth()
            self._registered = True

    def subscribe(self) -> None:
        if self.pubsub_thread is None:
            super().subscribe()
