"""The dispatcher: turns the events of watched jobs into deliveries.

While a job with subscriptions runs, the webhooks worker's dispatcher (one across replicas:
`DispatcherLease`) reads the event streams of the watched jobs from each subscription's cursor
(the last event handled, kept in Redis so a restart resumes) and turns the matching events into
deliveries, in the same transaction as it advances the cursor. It reads the watched jobs a window
at a time, round robin, so that however many are watched each is reached within one pass.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from redis.lock import Lock

from factorize_app import jobs
from factorize_app.jobs import keys as job_keys
from factorize_app.jobs.connection import (
    HOME,
    blocking_connection,
    redis_connection,
    server_connection,
    server_of_job,
)
from factorize_app.jobs.errors import translate_outages
from factorize_app.jobs.events import event_id_key, parse_event
from factorize_app.webhooks import deliveries, keys
from factorize_app.webhooks.events import COMPLETED, PROGRESS_INTERVAL_MS, THROTTLED, event_name
from factorize_app.webhooks.subscriptions import DONE, EXPIRED, WATCHING

# Watched jobs read per XREAD: a pass over all of them takes one round per window.
WINDOW = 500
# Longest the home Redis's read blocks while jobs on a type's own Redis are watched (read there
# without blocking, once per round): their deliveries' extra latency, at most.
AWAY_BLOCK_MS = 250


def _jobs_exist(job_ids: list[str]) -> list[int]:
    """Whether each job's hash or its stream is still there (on its type's Redis: one round trip each)."""
    found: dict[str, int] = {}
    for server in {server_of_job(job_id) for job_id in job_ids}:
        mine = [job_id for job_id in job_ids if server_of_job(job_id) == server]
        with server_connection(server).pipeline(transaction=False) as pipe:
            for job_id in mine:
                pipe.exists(job_keys.job(job_id), job_keys.events(job_id))
            found.update(zip(mine, pipe.execute(), strict=True))
    return [found[job_id] for job_id in job_ids]


class DispatcherLease:
    """The right to dispatch, held by one webhooks worker at a time and lost with it: a lock that
    expires unless its holder renews it (a SIGKILLed holder's lease runs out in `seconds`)."""

    def __init__(self, seconds: float = 10.0) -> None:
        self._lock = Lock(redis_connection(), keys.DISPATCHER, timeout=seconds, thread_local=False)
        self._held = False

    def hold(self) -> bool:
        """Take the lease if it is free, renew it if held; whether this process holds it now."""
        try:
            if self._held:
                self._held = bool(self._lock.reacquire())
            else:
                self._held = bool(self._lock.acquire(blocking=False))
        except redis.exceptions.LockError:
            self._held = False
        return self._held

    def release(self) -> None:
        if self._held:
            with contextlib.suppress(redis.exceptions.LockError):
                self._lock.release()
            self._held = False


# (job id, event, webhook event name) -> the body to deliver, or None: the job is gone.
BodyFor = Callable[[str, jobs.JobEvent, str], dict[str, Any] | None]


class Dispatcher:
    """Reads the watched jobs' event streams and makes their deliveries; run by the lease holder.

    Each `dispatch` reads the next window of watched jobs (round robin over all of them); the last
    window of a pass that found nothing blocks up to `block_ms` for new events (or a new
    subscription). The cursors live in Redis, so a new lease holder resumes where the last stopped."""

    def __init__(self) -> None:
        self._wake_after = "$"
        self._offset = 0
        self._found = False  # in this pass

    @translate_outages
    def dispatch(self, *, block_ms: int, body_for: BodyFor) -> int:
        """One round: new events of one window of watched jobs turned into deliveries; how many."""
        connection = redis_connection()
        if self._wake_after == "$":
            last = connection.xrevrange(keys.WAKE, count=1)
            self._wake_after = last[0][0].decode() if last else "0-0"
        with connection.pipeline(transaction=False) as pipe:
            pipe.zrange(keys.WATCHED, self._offset, self._offset + WINDOW - 1)
            pipe.zcard(keys.WATCHED)
            window, watched_count = pipe.execute()
        job_ids = [raw.decode() for raw in window]
        self._offset += WINDOW
        ends_pass = self._offset >= watched_count
        if ends_pass:
            self._offset = 0
        with connection.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(keys.subscriptions(job_id))
            watched = dict(zip(job_ids, pipe.execute(), strict=True))
        cursors = {}
        for job_id, subs in watched.items():
            live = [sub["cursor"] for sub in map(json.loads, subs.values()) if sub["state"] == WATCHING]
            if live:
                cursors[job_keys.events(job_id)] = min(live, key=event_id_key)
            else:
                connection.zrem(keys.WATCHED, job_id)
        # A job on a type's own Redis (TASK_REDIS_URLS) is read there, without blocking; while any
        # is watched, the home Redis's read blocks at most AWAY_BLOCK_MS (docs/type-redis.md).
        reply = []
        away = {}
        for stream, cursor in cursors.items():
            server = server_of_job(stream.removeprefix(job_keys.EVENTS_PREFIX))
            if server != HOME:
                away.setdefault(server, {})[stream] = cursor
        for server, streams in away.items():
            reply += server_connection(server).xread(streams, count=100) or []
            for stream in streams:
                del cursors[stream]
        streams = {**cursors, keys.WAKE: self._wake_after}
        block = block_ms if ends_pass and not self._found and not reply else None
        if block is not None and away:
            block = min(block, AWAY_BLOCK_MS)
        reply += blocking_connection().xread(streams, count=100, block=block) or []
        made = 0
        for stream, entries in reply:
            name = stream.decode()
            if name == keys.WAKE:
                self._wake_after = entries[-1][0].decode()
                continue
            self._found = True
            job_id = name.removeprefix(job_keys.EVENTS_PREFIX)
            made += self._handle(job_id, [parse_event(entry) for entry in entries], body_for)
        if ends_pass:
            self._found = False
        return made

    def _handle(self, job_id: str, events: list[jobs.JobEvent], body_for: BodyFor) -> int:
        subs_key = keys.subscriptions(job_id)
        bodies: dict[tuple[str, str], dict[str, Any] | None] = {}

        def body(event: jobs.JobEvent, name: str) -> dict[str, Any] | None:
            if (event.event_id, name) not in bodies:
                bodies[(event.event_id, name)] = body_for(job_id, event, name)
            return bodies[(event.event_id, name)]

        def attempt(pipe: redis.client.Pipeline) -> int:
            subs = {sub_id.decode(): json.loads(raw) for sub_id, raw in pipe.hgetall(subs_key).items()}
            watching = {sub_id: sub for sub_id, sub in subs.items() if sub["state"] == WATCHING}
            busy = {
                sub_id: deliveries.is_pending(pipe, sub["progress_delivery"])
                for sub_id, sub in watching.items()
                if sub.get("progress_delivery")
            }
            plans = {sub_id: _plan(sub, events, busy.get(sub_id, False)) for sub_id, sub in watching.items()}
            now = time.time()
            made = 0
            pipe.multi()
            for sub_id, (updated, wanted) in plans.items():
                completed = False
                for event, name in wanted:
                    snapshot = body(event, name)
                    if snapshot is None:  # the job vanished: nothing left to tell
                        updated["state"] = EXPIRED
                        break
                    delivery_id = deliveries.add(pipe, job_id=job_id, sub_id=sub_id, owner=updated["owner"],
                                                 url=updated["url"], event=name, body=snapshot, now=now)  # fmt: skip
                    if name in THROTTLED:
                        updated["progress_delivery"] = delivery_id
                    completed = completed or name == COMPLETED
                    made += 1
                pipe.hset(subs_key, sub_id, json.dumps(updated))
                if updated["state"] != WATCHING:
                    member = keys.live_member(job_id, sub_id)
                    if completed:  # live until its delivery ends
                        pipe.zadd(keys.live(updated["owner"]), {member: now + deliveries.delivery_span()})
                    else:
                        pipe.zrem(keys.live(updated["owner"]), member)
            if all(updated["state"] != WATCHING for updated, _ in plans.values()):
                pipe.zrem(keys.WATCHED, job_id)
            pipe.expire(subs_key, settings.WEBHOOK_RETENTION)
            return made

        return redis_connection().transaction(attempt, subs_key, value_from_callable=True)

    def requeue_due(self, *, limit: int = 500) -> int:
        """Queue again the pending deliveries whose time came (deliveries.requeue_due); how many."""
        return deliveries.requeue_due(limit=limit)

    @translate_outages
    def forget_stale(self) -> int:
        """Stop watching jobs that vanished (expired unrun, their stream gone) or whose wait ran
        out (WEBHOOK_RETENTION); their subscriptions end `expired`. How many."""
        connection = redis_connection()
        job_ids = [raw.decode() for raw in connection.zrange(keys.WATCHED, 0, -1)]
        with connection.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.zscore(keys.WATCHED, job_id)
            deadlines = pipe.execute()
        exists = _jobs_exist(job_ids)
        stale = [
            job_id
            for job_id, exists, deadline in zip(job_ids, exists, deadlines, strict=True)
            if not exists or (deadline or 0) < time.time()
        ]
        for job_id in stale:
            subs_key = keys.subscriptions(job_id)

            def attempt(pipe: redis.client.Pipeline, subs_key=subs_key, job_id=job_id) -> None:
                subs = {sub_id.decode(): json.loads(raw) for sub_id, raw in pipe.hgetall(subs_key).items()}
                pipe.multi()
                for sub_id, sub in subs.items():
                    if sub["state"] == WATCHING:
                        pipe.hset(subs_key, sub_id, json.dumps({**sub, "state": EXPIRED}))
                        pipe.zrem(keys.live(sub["owner"]), keys.live_member(job_id, sub_id))
                pipe.zrem(keys.WATCHED, job_id)

            connection.transaction(attempt, subs_key)
        return len(stale)


def _plan(
    sub: dict[str, Any], events: list[jobs.JobEvent], progress_busy: bool
) -> tuple[dict[str, Any], list[tuple[jobs.JobEvent, str]]]:
    """A subscription after `events` (its cursor moved past them), and the deliveries they make."""
    updated, wanted = dict(sub), []
    after = event_id_key(sub["cursor"])
    for event in events:
        if event_id_key(event.event_id) <= after or updated["state"] != WATCHING:
            continue
        updated["cursor"] = event.event_id
        name = event_name(event)
        if name in THROTTLED:  # progress and output, throttled together
            at = event_id_key(event.event_id)[0]
            if (name in sub["events"] and not progress_busy
                    and at - updated["last_progress"] >= PROGRESS_INTERVAL_MS):  # fmt: skip
                updated["last_progress"] = at
                progress_busy = True  # one progress delivery per round
                wanted.append((event, name))
        elif name is not None:
            if name in sub["events"]:
                wanted.append((event, name))
            if name == COMPLETED:
                updated["state"] = DONE
    return updated, wanted
