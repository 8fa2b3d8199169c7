"""The workers' health check: is this host's worker still heartbeating?

A worker process that is present but stuck (a hung model call that ignores its timeout, a
SIGSTOP, a deadlock) no longer renews its heartbeat in Redis; `docker compose` (healthcheck)
and Kubernetes (livenessProbe) run this command in the worker's container and restart it when
the command fails. The container is recognised by its host name, which RQ records in each
worker's registration (a worker's own name is a random id).
"""

import socket
from datetime import UTC, datetime

import django_rq
import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from rq.worker import Worker

from factorize_app.tasks import task_types


class Command(BaseCommand):
    help = (
        "Exit 0 when a worker on this host heartbeated within 3 x WORKER_HEARTBEAT seconds (or Redis is "
        "unreachable: the worker rides out outages on its own), else 1."
    )
    requires_system_checks = []  # a probe every few seconds: only what it needs

    def add_arguments(self, parser):
        parser.add_argument("--hostname", default=None, help="The worker's host name (default: this host's).")
        parser.add_argument(
            "--max-age",
            type=float,
            default=None,
            help="Oldest acceptable heartbeat in seconds (default: 3 x WORKER_HEARTBEAT, a job's lease).",
        )

    def handle(self, *args, **options):
        hostname = options["hostname"] or socket.gethostname()
        max_age = options["max_age"] if options["max_age"] is not None else 3 * settings.WORKER_HEARTBEAT
        try:
            workers = Worker.all(connection=django_rq.get_connection(task_types()[0].name))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            # Restarting the worker would not bring Redis back; the web's /readyz reports the outage.
            self.stdout.write(f"Redis unavailable ({exc}): not judging the worker")
            return
        ages = {
            worker.name: (datetime.now(UTC) - worker.last_heartbeat).total_seconds()
            for worker in workers
            if worker.hostname == hostname and worker.last_heartbeat is not None
        }
        if not ages:
            raise CommandError(f"unhealthy: no worker of host {hostname} is registered")
        name, age = min(ages.items(), key=lambda item: item[1])
        if age > max_age:
            raise CommandError(f"unhealthy: worker {name} last heartbeat {age:.0f} s ago (limit {max_age:.0f} s)")
        self.stdout.write(f"healthy: worker {name} heartbeat {age:.1f} s ago")
