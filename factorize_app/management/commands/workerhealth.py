"""The workers' health check: is this container's worker itself still heartbeating?

A worker process that is present but stuck (a hung model call that ignores its timeout, a
SIGSTOP, a deadlock) no longer renews its heartbeat in Redis; `docker compose` (healthcheck)
and Kubernetes (livenessProbe) run this command in the worker's container. It judges the
worker the container stands for: the registrations of this host whose process runs here (by
pid, and started before the registration, so a restarted container's worker is not taken for
its predecessor), leaving out plain rqworker's webhooks child (it heartbeats on its own, and
would vouch for a stuck parent), or one worker named by `--pid`. Each judged worker must have
beaten within the limit.
"""

import socket
from datetime import UTC, datetime

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from rq.worker import Worker

from factorize_app import watchdog
from factorize_app.jobs.connection import server_connection, servers
from factorize_app.webhooks.worker import PARENT_ENV


class Command(BaseCommand):
    help = (
        "Exit 0 when this container's worker (the model worker, not its webhooks child) heartbeated within "
        "3 x WORKER_HEARTBEAT seconds (or Redis is unreachable: the worker rides out outages on its own), else 1."
    )
    requires_system_checks = []  # a probe every few seconds: only what it needs

    def add_arguments(self, parser):
        parser.add_argument("--pid", type=int, default=None, help="Judge the worker of this process only.")
        parser.add_argument(
            "--hostname",
            default=None,
            help="Judge the workers registered from this host name, whatever their process (default: the "
            "workers of this host whose process runs here).",
        )
        parser.add_argument(
            "--max-age",
            type=float,
            default=None,
            help="Oldest acceptable heartbeat in seconds (default: 3 x WORKER_HEARTBEAT, a job's lease).",
        )

    def handle(self, *args, **options):
        max_age = options["max_age"] if options["max_age"] is not None else 3 * settings.WORKER_HEARTBEAT
        workers, unreachable = [], []
        for server in servers():  # the worker registered on its queues' Redis (TASK_REDIS_URLS)
            try:
                workers += Worker.all(connection=server_connection(server))
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                unreachable.append(exc)
        if unreachable and not self.judged(workers, pid=options["pid"], hostname=options["hostname"], strict=False):
            # Restarting the worker would not bring Redis back; the web's /readyz reports the outage.
            self.stdout.write(f"Redis unavailable ({unreachable[0]}): not judging the worker")
            return
        judged = self.judged(workers, pid=options["pid"], hostname=options["hostname"])
        now = datetime.now(UTC)
        ages = {
            worker.name: (now - worker.last_heartbeat).total_seconds() if worker.last_heartbeat else float("inf")
            for worker in judged
        }
        name, age = max(ages.items(), key=lambda item: item[1])
        if age > max_age:
            raise CommandError(f"unhealthy: worker {name} last heartbeat {age:.0f} s ago (limit {max_age:.0f} s)")
        self.stdout.write(f"healthy: worker {name} heartbeat {age:.1f} s ago")

    @staticmethod
    def judged(workers: list[Worker], *, pid: int | None, hostname: str | None, strict: bool = True) -> list[Worker]:
        """The workers to judge; none found is unhealthy (CommandError) when `strict`."""
        if pid is not None:
            found = [worker for worker in workers if worker.pid == pid and worker.hostname == socket.gethostname()]
            if not found and strict:
                raise CommandError(f"unhealthy: the process {pid} has no worker registered")
            return found
        if hostname is not None:
            found = [worker for worker in workers if worker.hostname == hostname]
        else:
            host = socket.gethostname()
            found = [
                worker
                for worker in workers
                if worker.hostname == host
                and watchdog.process_alive(worker.pid, worker.birth_date)
                and not started_by_a_worker(worker.pid)  # a webhooks child never stands for its parent
            ]
        if not found and strict:
            host = hostname or socket.gethostname()
            raise CommandError(f"unhealthy: no worker of host {host} is registered and running")
        return found


def started_by_a_worker(pid: int) -> bool:
    """Whether the process `pid` is plain rqworker's webhooks child (started with PARENT_ENV set)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return any(entry.startswith(PARENT_ENV.encode() + b"=") for entry in environ.read().split(b"\0"))
    except OSError:
        return False
