"""Deliveries, the Redis side: each one's record, its carrier job, its attempts and its outcome.

A delivery is a hash of its own (id = its `webhook-id`, the body snapshot, its state) carried to
the webhooks worker by an RQ job in the queue `webhooks`. Every pending delivery is also in one
sorted set (`keys.DUE`) scored by when it must be looked at again: a scheduled retry's due time, a
running attempt's lease end (its worker died: SIGKILL, a lost node), a queued delivery's grace
(lost between RQ's pop and its start). The dispatcher queues what is due again under a new token
(`requeue_due`); a carrier whose token is no longer the delivery's does nothing, so a delivery
queued twice is still sent once per attempt. An attempt has a deadline (WEBHOOK_TIMEOUT after its
claim) that ends before its lease, so no two attempts of a delivery ever run at once; a lease that
ran out counts as a failed attempt, and no delivery gets more than 1 + len(WEBHOOK_RETRY_DELAYS).
Nothing here speaks HTTP (webhooks.sending does, in the webhooks worker).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from rq.queue import Queue

from factorize_app.jobs.connection import redis_connection
from factorize_app.jobs.errors import translate_outages
from factorize_app.webhooks import keys
from factorize_app.webhooks.events import COMPLETED

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
RETRIED = "retried"  # an attempt's outcome (the delivery stays pending), counted for /metrics
# A queued delivery not started within this long is taken for lost (a worker died between RQ's
# pop and its start) and queued again; a queue backed up longer only costs a skipped carrier.
QUEUED_GRACE = 120
# Put back over its share of the worker's threads: due again this long after (no attempt spent).
DEFER_SECONDS = 1.0
# The function the webhooks worker runs for a delivery (by name: this module imports no HTTP).
DELIVER = "factorize_app.webhooks.attempts.deliver"
# Deliveries a subscription's record lists (the newest; older ones still expire on their own).
SHOWN_DELIVERIES = 50
_SHOWN_FIELDS = ["subscription", "event", "status", "attempts", "last_status", "last_error", "created", "updated"]


@dataclass(frozen=True)
class Delivery:
    """One claimed attempt of a delivery: what the worker sends, and the token it holds."""

    delivery_id: str
    job_id: str
    subscription: str  # its subscription's id
    url: str
    owner: str
    event: str
    body: str
    attempts: int  # this attempt included
    token: int
    deadline: float  # Unix time by which the attempt has ended, whatever the receiver does


def attempt_lease() -> float:
    """How long an attempt holds its delivery before it is taken for lost (its worker died): its
    deadline (WEBHOOK_TIMEOUT, the look-up included) and a margin, so a second attempt starts only
    after the first one's socket was shut."""
    return settings.WEBHOOK_TIMEOUT + 10


def max_attempts() -> int:
    return 1 + len(settings.WEBHOOK_RETRY_DELAYS)


def delivery_span() -> float:
    """At most how long a delivery stays pending: every attempt's lease and retry delay."""
    return max_attempts() * (attempt_lease() + QUEUED_GRACE) + sum(settings.WEBHOOK_RETRY_DELAYS) * 1.2


def add(
    pipe: redis.client.Pipeline,
    *,
    job_id: str,
    sub_id: str,
    owner: str,
    url: str,
    event: str,
    body: dict[str, Any],
    now: float,
) -> str:
    """Queue on `pipe` (in MULTI) a new delivery: its record, its place in the subscription's list
    and in the due set, and its carrier RQ job. Its id."""
    delivery_id = "msg_" + uuid.uuid4().hex
    key = keys.delivery(delivery_id)
    pipe.hset(
        key,
        mapping={
            "job": job_id,
            "subscription": sub_id,
            "owner": owner,
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
    listed = keys.subscription_deliveries(job_id, sub_id)
    pipe.rpush(listed, delivery_id)
    pipe.ltrim(listed, -SHOWN_DELIVERIES, -1)
    pipe.expire(listed, settings.WEBHOOK_RETENTION)
    pipe.zadd(keys.DUE, {delivery_id: now + QUEUED_GRACE})
    _enqueue(pipe, delivery_id, 1)
    return delivery_id


def is_pending(pipe: redis.client.Pipeline, delivery_id: str) -> bool:
    """Whether a delivery is still pending (read on `pipe`, watching or not)."""
    return pipe.hget(keys.delivery(delivery_id), "status") == PENDING.encode()


def _enqueue(pipe: redis.client.Pipeline, delivery_id: str, token: int) -> None:
    Queue(keys.QUEUE, connection=redis_connection()).enqueue(
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


@translate_outages
def requeue_due(*, limit: int = 500) -> int:
    """Queue again the pending deliveries whose time came (a retry, an expired attempt's lease, a
    queued one past its grace, one put back over its share of threads), each under a new token;
    how many."""
    connection = redis_connection()
    due = [raw.decode() for raw in connection.zrangebyscore(keys.DUE, "-inf", time.time(), start=0, num=limit)]
    for delivery_id in due:
        key = keys.delivery(delivery_id)

        def attempt(pipe: redis.client.Pipeline, delivery_id=delivery_id, key=key) -> None:
            status, token = pipe.hmget(key, "status", "token")
            pipe.multi()
            if status != PENDING.encode():
                pipe.zrem(keys.DUE, delivery_id)
                return
            new_token = int(token) + 1
            pipe.hset(key, "token", new_token)
            pipe.zadd(keys.DUE, {delivery_id: time.time() + QUEUED_GRACE})
            _enqueue(pipe, delivery_id, new_token)

        connection.transaction(attempt, key)
    return len(due)


@translate_outages
def claim(*, delivery_id: str, token: int, admit: Callable[[str, str], bool] | None = None) -> Delivery | None:
    """Start an attempt of a delivery; None when this carrier is stale (the delivery was queued
    again, or is done), when `admit(url, owner)` says no (it is due again in DEFER_SECONDS), or
    when its attempts are spent (the last one's lease ran out unrecorded: it ends failed). The
    attempt holds the delivery for `attempt_lease()` seconds and must end by its `deadline`."""
    key = keys.delivery(delivery_id)

    def attempt(pipe: redis.client.Pipeline) -> Delivery | None:
        record = {name.decode(): value.decode() for name, value in pipe.hgetall(key).items()}
        if record.get("status") != PENDING or int(record.get("token", 0)) != token:
            return None
        now = time.time()
        owner = record.get("owner", "")
        if int(record["attempts"]) >= max_attempts():
            pipe.multi()
            error = record.get("last_error") or "no answer recorded before the attempt's lease ran out"
            pipe.hset(key, mapping={"status": FAILED, "last_error": error, "updated": now})
            pipe.zrem(keys.DUE, delivery_id)
            pipe.hincrby(keys.METRICS, f"{record['event']} {FAILED}", 1)
            _ended(pipe, event=record["event"], owner=owner, job_id=record["job"], sub_id=record["subscription"])
            return None
        if admit is not None and not admit(record["url"], owner):
            pipe.multi()
            pipe.zadd(keys.DUE, {delivery_id: now + DEFER_SECONDS})
            return None
        attempts = int(record["attempts"]) + 1
        pipe.multi()
        pipe.hset(key, mapping={"attempts": attempts, "updated": now})
        pipe.zadd(keys.DUE, {delivery_id: now + attempt_lease()})
        return Delivery(
            delivery_id=delivery_id,
            job_id=record["job"],
            subscription=record["subscription"],
            url=record["url"],
            owner=owner,
            event=record["event"],
            body=record["body"],
            attempts=attempts,
            token=token,
            deadline=now + settings.WEBHOOK_TIMEOUT,
        )

    return redis_connection().transaction(attempt, key, value_from_callable=True)


def _ended(pipe: redis.client.Pipeline, *, event: str, owner: str, job_id: str, sub_id: str) -> None:
    """A delivery ended (in MULTI): a `completed` one ends its subscription's life for the cap."""
    if event == COMPLETED:
        pipe.zrem(keys.live(owner), keys.live_member(job_id, sub_id))


@translate_outages
def record_attempt(
    *, delivery: Delivery, status_code: int | None, error: str | None, retry_in: float | None
) -> str | None:
    """Record an attempt's answer: delivered (a 2xx), due again in `retry_in` seconds, or failed
    for good (retry_in None). Returns the outcome, None if the delivery was meanwhile queued again
    (a stale attempt records nothing)."""
    key = keys.delivery(delivery.delivery_id)
    ok = status_code is not None and 200 <= status_code < 300
    outcome = DELIVERED if ok else (RETRIED if retry_in is not None else FAILED)

    def attempt(pipe: redis.client.Pipeline) -> str | None:
        status, token = pipe.hmget(key, "status", "token")
        if status != PENDING.encode() or int(token or 0) != delivery.token:
            return None
        now = time.time()
        pipe.multi()
        fields = {"last_status": status_code or "", "last_error": (error or "")[:300], "updated": now}
        if outcome == RETRIED:
            pipe.zadd(keys.DUE, {delivery.delivery_id: now + retry_in})
        else:
            fields["status"] = outcome
            pipe.zrem(keys.DUE, delivery.delivery_id)
            _ended(pipe, event=delivery.event, owner=delivery.owner, job_id=delivery.job_id,
                   sub_id=delivery.subscription)  # fmt: skip
        pipe.hset(key, mapping=fields)
        pipe.hincrby(keys.METRICS, f"{delivery.event} {outcome}", 1)
        return outcome

    return redis_connection().transaction(attempt, key, value_from_callable=True)


@translate_outages
def pending_count() -> int:
    """Deliveries not yet delivered or given up: queued, under way, or waiting to retry."""
    return redis_connection().zcard(keys.DUE)


@translate_outages
def delivery_counts() -> dict[tuple[str, str], int]:
    """Delivery attempts' outcomes so far, by (event, outcome): delivered, retried, failed."""
    counts = {}
    for field, value in redis_connection().hgetall(keys.METRICS).items():
        event, _, outcome = field.decode().partition(" ")
        counts[(event, outcome)] = int(value)
    return counts


def shown(*, job_id: str, sub_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The newest deliveries (SHOWN_DELIVERIES) of each of a job's subscriptions, oldest first, as
    `GET /jobs/<id>/webhooks` shows them; expired ones are left out. Two round trips."""
    connection = redis_connection()
    with connection.pipeline(transaction=False) as pipe:
        for sub_id in sub_ids:
            pipe.lrange(keys.subscription_deliveries(job_id, sub_id), -SHOWN_DELIVERIES, -1)
        lists = dict(zip(sub_ids, pipe.execute(), strict=True))
    delivery_ids = [(sub_id, raw.decode()) for sub_id, ids in lists.items() for raw in ids]
    with connection.pipeline(transaction=False) as pipe:
        for _, delivery_id in delivery_ids:
            pipe.hmget(keys.delivery(delivery_id), _SHOWN_FIELDS)
        records = pipe.execute()
    deliveries: dict[str, list[dict[str, Any]]] = {sub_id: [] for sub_id in sub_ids}
    for (sub_id, delivery_id), values in zip(delivery_ids, records, strict=True):
        if values[0] is None:
            continue  # expired
        record = dict(zip(_SHOWN_FIELDS, (value.decode() if value is not None else None for value in values),
                          strict=True))  # fmt: skip
        deliveries[sub_id].append(
            {
                "webhook_id": delivery_id,
                "event": record["event"],
                "status": record["status"],
                "attempts": int(record["attempts"] or 0),
                "last_status": int(record["last_status"]) if record["last_status"] else None,
                "last_error": record["last_error"] or None,
                "created": float(record["created"] or 0),
                "updated": float(record["updated"] or 0),
            }
        )
    return deliveries
