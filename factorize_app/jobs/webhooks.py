"""Completion webhooks, the Redis side: subscriptions, deliveries, and the dispatcher's reads.

A subscription (a URL and the events it wants: `start`, `progress`, `completed`) belongs to a job
and to the client who made it (its owner). While the job runs, the webhooks worker's dispatcher
(one across replicas: `DispatcherLease`) reads the event streams of the watched jobs from each
subscription's cursor (the last event handled, kept in Redis so a restart resumes) and turns the
matching events into deliveries, in the same transaction as it advances the cursor.

A delivery is a hash of its own (id = its `webhook-id`, the body snapshot, its state) carried to
the webhooks worker by an RQ job in the queue `webhooks`. Every pending delivery is also in one
sorted set (`keys.WEBHOOK_DUE`) scored by when it must be looked at again: a scheduled retry's
due time, a running attempt's lease end (its worker died: SIGKILL, a lost node), a queued
delivery's grace (lost between RQ's pop and its start). The dispatcher queues what is due again
under a new token; a carrier whose token is no longer the delivery's does nothing, so a delivery
queued twice is still sent once per attempt. Nothing here speaks HTTP.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from redis.lock import Lock
from rq.queue import Queue

from factorize_app.jobs import keys
from factorize_app.jobs.connection import blocking_client, redis_client
from factorize_app.jobs.errors import translate_outages
from factorize_app.jobs.events import JobEvent, _event, event_id_key
from factorize_app.jobs.states import DONE_STATUSES, STARTED

logger = logging.getLogger("factorize_app.webhooks")

START, PROGRESS, COMPLETED = "start", "progress", "completed"
WEBHOOK_EVENTS = (START, PROGRESS, COMPLETED)
DEFAULT_EVENTS = [COMPLETED]
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
# Progress deliveries of one subscription are at least this far apart (by the events' times).
PROGRESS_INTERVAL_MS = 500
# A queued delivery not started within this long is taken for lost (a worker died between RQ's
# pop and its start) and queued again; a queue backed up longer only costs a skipped carrier.
QUEUED_GRACE = 120
# The function the webhooks worker runs for a delivery (by name: this package imports no HTTP).
DELIVER = "factorize_app.webhooks.delivery.deliver"
WATCHING, DONE, EXPIRED = "watching", "done", "expired"


@dataclass(frozen=True)
class Delivery:
    """One claimed attempt of a delivery: what the worker sends, and the token it holds."""

    delivery_id: str
    job_id: str
    url: str
    event: str
    body: str
    attempts: int  # this attempt included
    token: int


def subscription_id(owner: str, url: str) -> str:
    """One subscription per client and URL on a job: re-posting the same input (the poll) with the
    same webhook subscribes nothing new."""
    return hashlib.sha256(f"{owner}\n{url}".encode()).hexdigest()[:16]


@translate_outages
def subscribe(*, job_id: str, url: str, events: list[str], owner: str, done_body: dict[str, Any] | None = None) -> bool:
    """Subscribe `url` to the job's `events` for `owner`; False if that subscription exists.

    `done_body`: the job is already done and this is its status body: the `completed` delivery is
    made at once (its stream may be gone) and the job is not watched."""
    client = redis_client()
    sub_id = subscription_id(owner, url)
    subs_key = keys.webhook_subscriptions(job_id)
    now = time.time()
    subscription = {"url": url, "events": list(events), "owner": owner, "cursor": "0-0", "last_progress": 0}

    def attempt(pipe: redis.client.Pipeline) -> bool:
        if pipe.hexists(subs_key, sub_id):
            return False
        pipe.multi()
        if done_body is not None:
            pipe.hset(subs_key, sub_id, json.dumps({**subscription, "state": DONE}))
            if COMPLETED in events:
                _add_delivery(pipe, job_id=job_id, sub_id=sub_id, url=url, event=COMPLETED, body=done_body, now=now)
        else:
            pipe.hset(subs_key, sub_id, json.dumps({**subscription, "state": WATCHING}))
            pipe.zadd(keys.WEBHOOK_WATCHED, {job_id: now + settings.WEBHOOK_RETENTION})
            pipe.xadd(keys.WEBHOOK_WAKE, {"job": job_id}, maxlen=16, approximate=True)
        pipe.expire(subs_key, settings.WEBHOOK_RETENTION)
        return True

    return client.transaction(attempt, subs_key, value_from_callable=True)


@translate_outages
def subscriptions(*, job_id: str, owner: str | None = None) -> list[dict[str, Any]]:
    """The job's subscriptions (only `owner`'s unless None) with the state of their deliveries."""
    client = redis_client()
    subs = {
        sub_id.decode(): json.loads(raw) for sub_id, raw in client.hgetall(keys.webhook_subscriptions(job_id)).items()
    }
    subs = {sub_id: sub for sub_id, sub in subs.items() if owner is None or sub["owner"] == owner}
    delivery_ids = [raw.decode() for raw in client.lrange(keys.webhook_job_deliveries(job_id), 0, -1)]
    with client.pipeline(transaction=False) as pipe:
        for delivery_id in delivery_ids:
            pipe.hmget(keys.webhook_delivery(delivery_id), _SHOWN_FIELDS)
        records = pipe.execute()
    deliveries: dict[str, list[dict[str, Any]]] = {sub_id: [] for sub_id in subs}
    for delivery_id, values in zip(delivery_ids, records, strict=True):
        record = {
            name: (value.decode() if value is not None else None)
            for name, value in zip(_SHOWN_FIELDS, values, strict=True)
        }
        if record["subscription"] in deliveries:
            deliveries[record["subscription"]].append(_shown(delivery_id, record))
    answer = []
    for sub_id, sub in sorted(subs.items(), key=lambda item: item[1]["url"]):
        own = deliveries[sub_id]
        answer.append(
            {
                "url": sub["url"],
                "events": sub["events"],
                "state": _subscription_state(sub["state"], own),
                "deliveries": own,
            }
        )
    return answer


_SHOWN_FIELDS = ["subscription", "event", "status", "attempts", "last_status", "last_error", "created", "updated"]


def _shown(delivery_id: str, record: dict[str, str | None]) -> dict[str, Any]:
    return {
        "webhook_id": delivery_id,
        "event": record["event"],
        "status": record["status"],
        "attempts": int(record["attempts"] or 0),
        "last_status": int(record["last_status"]) if record["last_status"] else None,
        "last_error": record["last_error"] or None,
        "created": float(record["created"] or 0),
        "updated": float(record["updated"] or 0),
    }


def _subscription_state(state: str, deliveries: list[dict[str, Any]]) -> str:
    """pending (a delivery under way, or events still to come), else its last delivery's outcome
    (delivered, failed), `expired` (the job vanished or the wait ran out unseen) or `done` (the
    job ended and none of the events it wanted came)."""
    if state == WATCHING or any(delivery["status"] == PENDING for delivery in deliveries):
        return PENDING
    if deliveries:
        return deliveries[-1]["status"]
    return state


# --- the dispatcher ----------------------------------------------------------------------------


class DispatcherLease:
    """The right to dispatch, held by one webhooks worker at a time and lost with it: a lock that
    expires unless its holder renews it (a SIGKILLed holder's lease runs out in `seconds`)."""

    def __init__(self, seconds: float = 10.0) -> None:
        self._lock = Lock(redis_client(), keys.WEBHOOK_DISPATCHER, timeout=seconds, thread_local=False)
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
BodyFor = Callable[[str, JobEvent, str], dict[str, Any] | None]


class Dispatcher:
    """Reads the watched jobs' event streams and makes their deliveries; run by the lease holder.

    `dispatch` blocks up to `block_ms` for new events (or a new subscription) and handles what
    came; the cursors live in Redis, so a new lease holder resumes where the last one stopped."""

    def __init__(self) -> None:
        self._wake_after = "$"

    @translate_outages
    def dispatch(self, *, block_ms: int, body_for: BodyFor) -> int:
        """One round: new events of watched jobs turned into deliveries; how many were made."""
        client = redis_client()
        if self._wake_after == "$":
            last = client.xrevrange(keys.WEBHOOK_WAKE, count=1)
            self._wake_after = last[0][0].decode() if last else "0-0"
        job_ids = [raw.decode() for raw in client.zrange(keys.WEBHOOK_WATCHED, 0, 999)]
        with client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(keys.webhook_subscriptions(job_id))
            watched = dict(zip(job_ids, pipe.execute(), strict=True))
        cursors = {}
        for job_id, subs in watched.items():
            live = [json.loads(raw)["cursor"] for raw in subs.values() if json.loads(raw)["state"] == WATCHING]
            if live:
                cursors[keys.events(job_id)] = min(live, key=event_id_key)
            else:
                client.zrem(keys.WEBHOOK_WATCHED, job_id)
        streams = {**cursors, keys.WEBHOOK_WAKE: self._wake_after}
        reply = blocking_client().xread(streams, count=100, block=block_ms) or []
        made = 0
        for stream, entries in reply:
            name = stream.decode()
            if name == keys.WEBHOOK_WAKE:
                self._wake_after = entries[-1][0].decode()
                continue
            job_id = name.removeprefix(keys.EVENTS_PREFIX)
            made += self._handle(job_id, [_event(entry) for entry in entries], body_for)
        return made

    def _handle(self, job_id: str, events: list[JobEvent], body_for: BodyFor) -> int:
        subs_key = keys.webhook_subscriptions(job_id)
        bodies: dict[tuple[str, str], dict[str, Any] | None] = {}

        def body(event: JobEvent, name: str) -> dict[str, Any] | None:
            if (event.event_id, name) not in bodies:
                bodies[(event.event_id, name)] = body_for(job_id, event, name)
            return bodies[(event.event_id, name)]

        def attempt(pipe: redis.client.Pipeline) -> int:
            subs = {sub_id.decode(): json.loads(raw) for sub_id, raw in pipe.hgetall(subs_key).items()}
            plans = {sub_id: _plan(sub, events) for sub_id, sub in subs.items() if sub["state"] == WATCHING}
            now = time.time()
            made = 0
            pipe.multi()
            for sub_id, (updated, wanted) in plans.items():
                for event, name in wanted:
                    snapshot = body(event, name)
                    if snapshot is None:  # the job vanished: nothing left to tell
                        updated["state"] = EXPIRED
                        break
                    _add_delivery(pipe, job_id=job_id, sub_id=sub_id, url=updated["url"], event=name, body=snapshot,
                                  now=now)  # fmt: skip
                    made += 1
                pipe.hset(subs_key, sub_id, json.dumps(updated))
            if all(updated["state"] != WATCHING for updated, _ in plans.values()):
                pipe.zrem(keys.WEBHOOK_WATCHED, job_id)
            pipe.expire(subs_key, settings.WEBHOOK_RETENTION)
            return made

        return redis_client().transaction(attempt, subs_key, value_from_callable=True)

    @translate_outages
    def requeue_due(self, *, limit: int = 500) -> int:
        """Queue again the pending deliveries whose time came (a retry, an expired attempt's lease,
        a queued one past its grace), each under a new token; how many."""
        client = redis_client()
        due = [raw.decode() for raw in client.zrangebyscore(keys.WEBHOOK_DUE, "-inf", time.time(), start=0, num=limit)]
        for delivery_id in due:
            key = keys.webhook_delivery(delivery_id)

            def attempt(pipe: redis.client.Pipeline, delivery_id=delivery_id, key=key) -> None:
                status, token = pipe.hmget(key, "status", "token")
                pipe.multi()
                if status != PENDING.encode():
                    pipe.zrem(keys.WEBHOOK_DUE, delivery_id)
                    return
                new_token = int(token) + 1
                pipe.hset(key, "token", new_token)
                pipe.zadd(keys.WEBHOOK_DUE, {delivery_id: time.time() + QUEUED_GRACE})
                _enqueue(pipe, delivery_id, new_token)

            client.transaction(attempt, key)
        return len(due)

    @translate_outages
    def forget_stale(self) -> int:
        """Stop watching jobs that vanished (expired unrun, their stream gone) or whose wait ran
        out (WEBHOOK_RETENTION); their subscriptions end `expired`. How many."""
        client = redis_client()
        job_ids = [raw.decode() for raw in client.zrange(keys.WEBHOOK_WATCHED, 0, -1)]
        with client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(keys.job(job_id), keys.events(job_id))
                pipe.zscore(keys.WEBHOOK_WATCHED, job_id)
            replies = pipe.execute()
        stale = [
            job_id
            for job_id, exists, deadline in zip(job_ids, replies[::2], replies[1::2], strict=True)
            if not exists or (deadline or 0) < time.time()
        ]
        for job_id in stale:
            subs_key = keys.webhook_subscriptions(job_id)

            def attempt(pipe: redis.client.Pipeline, subs_key=subs_key, job_id=job_id) -> None:
                subs = {sub_id: json.loads(raw) for sub_id, raw in pipe.hgetall(subs_key).items()}
                pipe.multi()
                for sub_id, sub in subs.items():
                    if sub["state"] == WATCHING:
                        pipe.hset(subs_key, sub_id, json.dumps({**sub, "state": EXPIRED}))
                pipe.zrem(keys.WEBHOOK_WATCHED, job_id)

            client.transaction(attempt, subs_key)
        return len(stale)


def _plan(sub: dict[str, Any], events: list[JobEvent]) -> tuple[dict[str, Any], list[tuple[JobEvent, str]]]:
    """A subscription after `events` (its cursor moved past them), and the deliveries they make."""
    updated, wanted = dict(sub), []
    after = event_id_key(sub["cursor"])
    for event in events:
        if event_id_key(event.event_id) <= after or updated["state"] != WATCHING:
            continue
        updated["cursor"] = event.event_id
        name = _event_name(event)
        if name == PROGRESS:
            at = event_id_key(event.event_id)[0]
            if PROGRESS in sub["events"] and at - updated["last_progress"] >= PROGRESS_INTERVAL_MS:
                updated["last_progress"] = at
                wanted.append((event, name))
        elif name is not None:
            if name in sub["events"]:
                wanted.append((event, name))
            if name == COMPLETED:
                updated["state"] = DONE
    return updated, wanted


def _event_name(event: JobEvent) -> str | None:
    if event.status in DONE_STATUSES:
        return COMPLETED
    if event.status == STARTED:
        return PROGRESS if event.progress else START
    return None  # queued (again): not a webhook event


def _add_delivery(
    pipe: redis.client.Pipeline, *, job_id: str, sub_id: str, url: str, event: str, body: dict[str, Any], now: float
) -> str:
    """Queue on `pipe` (in MULTI) a new delivery: its record, its place in the job's list and in
    the due set, and its carrier RQ job."""
    delivery_id = "msg_" + uuid.uuid4().hex
    key = keys.webhook_delivery(delivery_id)
    pipe.hset(
        key,
        mapping={
            "job": job_id,
            "subscription": sub_id,
            "url": url,
            "event": event,
            "body": json.dumps(body, separators=(",", ":")),
            "status": PENDING,
            "attempts": 0,
            "token": 1,
            "last_status": "",
            "last_error": "",
            "created": now,
            "updated": now,
        },
    )
    pipe.expire(key, settings.WEBHOOK_RETENTION)
    pipe.rpush(keys.webhook_job_deliveries(job_id), delivery_id)
    pipe.expire(keys.webhook_job_deliveries(job_id), settings.WEBHOOK_RETENTION)
    pipe.zadd(keys.WEBHOOK_DUE, {delivery_id: now + QUEUED_GRACE})
    _enqueue(pipe, delivery_id, 1)
    return delivery_id


def _enqueue(pipe: redis.client.Pipeline, delivery_id: str, token: int) -> None:
    Queue(keys.WEBHOOK_QUEUE, connection=redis_client()).enqueue(
        DELIVER,
        delivery_id,
        token,
        job_id=f"{delivery_id}-{token}",
        description=f"webhook {delivery_id}",
        result_ttl=0,  # the delivery's own record is the outcome
        failure_ttl=settings.WEBHOOK_RETENTION,
        job_timeout=int(attempt_lease()) + 30,
        pipeline=pipe,
    )


# --- the delivering worker ----------------------------------------------------------------------


def attempt_lease() -> float:
    """How long an attempt may take before it is taken for lost (its worker died): a look-up and
    a request, each within WEBHOOK_TIMEOUT, and a margin."""
    return 2 * settings.WEBHOOK_TIMEOUT + 5


@translate_outages
def claim(*, delivery_id: str, token: int) -> Delivery | None:
    """Start an attempt of a delivery; None when this carrier is stale (the delivery was queued
    again, or is done). The attempt holds the delivery for `attempt_lease()` seconds."""
    key = keys.webhook_delivery(delivery_id)

    def attempt(pipe: redis.client.Pipeline) -> Delivery | None:
        record = {name.decode(): value.decode() for name, value in pipe.hgetall(key).items()}
        if record.get("status") != PENDING or int(record.get("token", 0)) != token:
            return None
        attempts = int(record["attempts"]) + 1
        pipe.multi()
        pipe.hset(key, mapping={"attempts": attempts, "updated": time.time()})
        pipe.zadd(keys.WEBHOOK_DUE, {delivery_id: time.time() + attempt_lease()})
        return Delivery(delivery_id, record["job"], record["url"], record["event"], record["body"], attempts, token)

    return redis_client().transaction(attempt, key, value_from_callable=True)


@translate_outages
def record_attempt(
    *, delivery: Delivery, status_code: int | None, error: str | None, retry_in: float | None
) -> str | None:
    """Record an attempt's answer: delivered (a 2xx), due again in `retry_in` seconds, or failed
    for good (retry_in None). Returns the outcome, None if the delivery was meanwhile queued again
    (a stale attempt records nothing)."""
    key = keys.webhook_delivery(delivery.delivery_id)
    ok = status_code is not None and 200 <= status_code < 300
    outcome = DELIVERED if ok else ("retried" if retry_in is not None else FAILED)

    def attempt(pipe: redis.client.Pipeline) -> str | None:
        status, token = pipe.hmget(key, "status", "token")
        if status != PENDING.encode() or int(token or 0) != delivery.token:
            return None
        now = time.time()
        pipe.multi()
        fields = {"last_status": status_code or "", "last_error": (error or "")[:300], "updated": now}
        if outcome == "retried":
            pipe.zadd(keys.WEBHOOK_DUE, {delivery.delivery_id: now + retry_in})
        else:
            fields["status"] = outcome
            pipe.zrem(keys.WEBHOOK_DUE, delivery.delivery_id)
        pipe.hset(key, mapping=fields)
        pipe.hincrby(keys.WEBHOOK_METRICS, f"{delivery.event} {outcome}", 1)
        return outcome

    return redis_client().transaction(attempt, key, value_from_callable=True)


@translate_outages
def delivery_counts() -> dict[tuple[str, str], int]:
    """Delivery attempts' outcomes so far, by (event, outcome): delivered, retried, failed."""
    counts = {}
    for field, value in redis_client().hgetall(keys.WEBHOOK_METRICS).items():
        event, _, outcome = field.decode().partition(" ")
        counts[(event, outcome)] = int(value)
    return counts
