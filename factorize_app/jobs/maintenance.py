"""The workers' maintenance of the queue: jobs lost in an outage come back, dead workers go.

Outages do not expire the queue: Redis expires a queued job JOB_TTL after its last poll by the
wall clock, so an outage longer than that (clients cannot poll) would empty the queue. Every
script that serves the queue (polls, takes, this sweep) ticks a clock in Redis
(`clock_tick.lua`); a tick that finds the clock older than OUTAGE_GAP seconds records the gap
as an outage. Each queued job's input is kept (without expiry) in a per-type hash until a worker
takes it; the sweep (`sweep_queue`) re-enqueues the jobs that expired during a recorded outage,
with a fresh JOB_TTL, and forgets the inputs of jobs that expired while the queue was looked
after.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from redis.exceptions import WatchError

from factorize_app.jobs import keys, scripts
from factorize_app.jobs.connection import HOME, redis_for, server_connection, types_on
from factorize_app.jobs.errors import translate_outages
from factorize_app.jobs.ids import input_of
from factorize_app.jobs.monitoring import beat_is_recent
from factorize_app.jobs.states import ABORTED, CANCELED
from factorize_app.jobs.submit import enqueue


@dataclasses.dataclass(frozen=True)
class Swept:
    """What a sweep brought back, and the gap they expired in: its length, and whether Redis
    itself restarted in it (else Redis was up, and no process served the queue or reached it)."""

    restored: int = 0
    gap: float = 0.0
    redis_restarted: bool = False

    def describe(self) -> str:
        if self.redis_restarted:
            return f"queued jobs that expired while Redis was down ({self.gap:.0f} s) enqueued again"
        return (
            f"queued jobs that expired while nothing served the queue for {self.gap:.0f} s "
            "(no worker ran and no client polled, or none could reach Redis) enqueued again"
        )


@translate_outages
def sweep_queue(*, limit: int = 1000, server: str = HOME) -> Swept:
    """Re-enqueue the jobs of a server's types that expired during its outages, forget those that
    expired unpolled (at most `limit` expired jobs of each type looked at). Answers how many came
    back, and from what."""
    conn = server_connection(server)
    scripts.TICK(**scripts.CLOCK_KEYS, server=server)  # records an outage that ends now, if any
    outages = conn.lrange(keys.OUTAGES, 0, -1)
    outage_start = min((float(entry.split()[0]) for entry in outages), default=None)
    outage_end = max((float(entry.split()[1]) for entry in outages), default=None)
    restored = 0
    for task_type in types_on(server):
        name = task_type.name
        lost = scripts.SWEEP(
            server=server,
            pending=keys.pending(name),
            inputs=keys.queued_inputs(name),
            **scripts.CLOCK_KEYS,
            outage_start="" if outage_start is None else outage_start,
            job_ttl=task_type.setting("job_ttl"),
            limit=limit,
        )
        by_client: dict[str, dict[str, dict[str, Any]]] = {}
        for job_id, stored in lost:
            client, _, text = stored.decode().partition(" ")
            data = input_of(task_type, job_id.decode(), f"{name} {text}")
            if data is not None:
                by_client.setdefault(client, {})[job_id.decode()] = data
        for client, new_jobs in by_client.items():
            enqueue(task_type, new_jobs, client)
            restored += len(new_jobs)
    if outages:
        conn.ltrim(keys.OUTAGES, len(outages), -1)
    if not restored:
        return Swept()
    # Redis up since before the gap began: it was not down (the queue was only left unserved).
    started_at = conn.time()[0] - int(conn.info("server")["uptime_in_seconds"])
    return Swept(restored, outage_end - outage_start, redis_restarted=started_at > outage_start)


@translate_outages
def recount_running(*, server: str = HOME) -> None:
    """Count each client's running jobs afresh (fair order's running caps), from RQ's registries."""
    for task_type in types_on(server):
        name = task_type.name
        scripts.RECOUNT(started=keys.started(name), running=keys.fair_running(name), server=server)


CLEANING_LOCK_SECONDS = 899  # RQ's own: a backstop, for a holder that heartbeats but never lets go


@translate_outages
def take_cleaning_lock(*, queue_name: str, worker_name: str) -> bool:
    """The right to clean a queue's registries now, held by one worker at a time.

    RQ's own lock is a bare flag that lasts 15 minutes, so a worker killed while cleaning (OOM,
    SIGKILL, a lost node) would stall the recovery of every dead worker's jobs on that queue for
    as long. This one names its holder, and a lock whose holder no longer heartbeats (or that
    names no worker: RQ's flag) is taken over. Release it with RQ's release_maintenance_lock."""
    conn = redis_for(queue_name)
    lock = keys.cleaning_lock(queue_name)
    if conn.set(lock, worker_name, nx=True, ex=CLEANING_LOCK_SECONDS):
        return True
    with conn.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(lock)
            holder = pipe.get(lock)
            if holder is not None and holder.decode() != worker_name:
                beat = pipe.hget(keys.worker(holder.decode()), "last_heartbeat")
                if beat is not None and beat_is_recent(beat, int(pipe.time()[0])):
                    return False  # a live worker is cleaning it
            pipe.multi()
            pipe.set(lock, worker_name, ex=CLEANING_LOCK_SECONDS)
            pipe.execute()
        except WatchError:
            return False  # another worker took it over first
    return True


@translate_outages
def clean_stale_workers(*, server: str = HOME) -> list[str]:
    """Unregister workers that stopped heartbeating (killed, lost with their node) more than
    WORKER_LIVENESS ago, so RQ's and the dashboard's listings show live workers only. Their jobs
    are recovered by RQ's registry cleanup when their lease runs out. Answers their names."""
    conn = server_connection(server)
    worker_keys = [key.decode() for key in conn.smembers(keys.ALL_WORKERS)]
    if not worker_keys:
        return []
    now = int(conn.time()[0])
    with conn.pipeline(transaction=False) as pipe:
        for key in worker_keys:
            pipe.hmget(key, "last_heartbeat", "death", "queues")
        rows = pipe.execute()
    stale = [
        (key, queues)
        for key, (beat, death, queues) in zip(worker_keys, rows, strict=True)
        if death is None and (beat is None or not beat_is_recent(beat, now))
    ]
    with conn.pipeline(transaction=True) as pipe:
        for key, queues in stale:
            pipe.delete(key, keys.worker_executions(key.removeprefix(keys.WORKER_PREFIX)))
            pipe.srem(keys.ALL_WORKERS, key)
            for name in (queues or b"").decode().split(","):
                if name:
                    pipe.srem(keys.workers_of(name), key)
        pipe.execute()
    return [key.removeprefix(keys.WORKER_PREFIX) for key, _ in stale]


@translate_outages
def upgrade_statuses(*, server: str = HOME) -> int:
    """Jobs stored by an earlier version with `aborted` in RQ's status field (a word RQ's tools
    cannot read) get RQ's `canceled` there and `aborted` in our own field. Run at a worker's
    start; the aborted registries bound the look. Answers how many were mended."""
    conn = server_connection(server)
    mended = 0
    for task_type in types_on(server):
        for raw in conn.zrange(keys.aborted(task_type.name), 0, -1):
            key = keys.job(raw.decode())
            if conn.hget(key, "status") == ABORTED.encode():
                conn.hset(key, mapping={"status": CANCELED, keys.STATE_FIELD: ABORTED})
                mended += 1
    return mended
