"""Completion webhooks, the Redis side: subscriptions, their caps, and deliveries.

A subscription (a URL and the events it wants: `start`, `progress`, `completed`) belongs to a job
and to the client who made it (its owner). A client has at most WEBHOOK_MAX_PER_JOB on one job and
WEBHOOK_MAX_PER_CLIENT live at once (watching a job, or its `completed` delivery under way), and
none is made past Redis's high-water mark. The dispatcher (jobs.webhook_dispatcher) turns the
watched jobs' events into deliveries.

A delivery is a hash of its own (id = its `webhook-id`, the body snapshot, its state) carried to
the webhooks worker by an RQ job in the queue `webhooks`. Every pending delivery is also in one
sorted set (`keys.WEBHOOK_DUE`) scored by when it must be looked at again: a scheduled retry's
due time, a running attempt's lease end (its worker died: SIGKILL, a lost node), a queued
delivery's grace (lost between RQ's pop and its start). The dispatcher queues what is due again
under a new token; a carrier whose token is no longer the delivery's does nothing, so a delivery
queued twice is still sent once per attempt. An attempt has a deadline (WEBHOOK_TIMEOUT after its
claim) that ends before its lease, so no two attempts of a delivery ever run at once; a lease that
ran out counts as a failed attempt, and no delivery gets more than 1 + len(WEBHOOK_RETRY_DELAYS).
Nothing here speaks HTTP.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from rq.queue import Queue

from factorize_app.jobs import keys
from factorize_app.jobs.connection import redis_connection
from factorize_app.jobs.errors import SubmitRefused, translate_outages
from factorize_app.jobs.monitoring import admit_new_jobs

START, PROGRESS, COMPLETED = "start", "progress", "completed"
WEBHOOK_EVENTS = (START, PROGRESS, COMPLETED)
DEFAULT_EVENTS = [COMPLETED]
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
# A queued delivery not started within this long is taken for lost (a worker died between RQ's
# pop and its start) and queued again; a queue backed up longer only costs a skipped carrier.
QUEUED_GRACE = 120
# The function the webhooks worker runs for a delivery (by name: this package imports no HTTP).
DELIVER = "factorize_app.webhooks.delivery.deliver"
WATCHING, DONE, EXPIRED = "watching", "done", "expired"
# Deliveries a subscription's record lists (the newest; older ones still expire on their own).
SHOWN_DELIVERIES = 50


@dataclass(frozen=True)
class Delivery:
    """One claimed attempt of a delivery: what the worker sends, and the token it holds."""

    delivery_id: str
    job_id: str
    url: str
    owner: str
    event: str
    body: str
    attempts: int  # this attempt included
    token: int
    deadline: float  # Unix time by which the attempt has ended, whatever the receiver does


class SubscriptionRefused(Exception):
    """A subscription over a cap or past the high-water mark (the message says which)."""


def subscription_id(owner: str, url: str) -> str:
    """One subscription per client and URL on a job: re-posting the same input (the poll) with the
    same webhook subscribes nothing new."""
    return hashlib.sha256(f"{owner}\n{url}".encode()).hexdigest()[:16]


def _live_member(job_id: str, sub_id: str) -> str:
    return f"{job_id} {sub_id}"


def delivery_span() -> float:
    """At most how long a delivery stays pending: every attempt's lease and retry delay."""
    attempts = 1 + len(settings.WEBHOOK_RETRY_DELAYS)
    return attempts * (attempt_lease() + QUEUED_GRACE) + sum(settings.WEBHOOK_RETRY_DELAYS) * 1.2


@translate_outages
def admit(*, owner: str, wanted: list[tuple[str, str]]) -> tuple[list[str | None], int]:
    """Whether `owner` may subscribe each (job id, url) of `wanted`, in order (None: yes, or it
    is subscribed already; else why not), and how many new subscriptions that makes."""
    client = redis_connection()
    now = time.time()
    job_ids = list(dict.fromkeys(job_id for job_id, _ in wanted))
    with client.pipeline(transaction=False) as pipe:
        pipe.zcount(keys.webhook_client(owner), now, "+inf")
        for job_id in job_ids:
            pipe.hgetall(keys.webhook_subscriptions(job_id))
        live, *subs = pipe.execute()
    owned = {
        job_id: {sub_id.decode() for sub_id, raw in job_subs.items() if json.loads(raw)["owner"] == owner}
        for job_id, job_subs in zip(job_ids, subs, strict=True)
    }
    answers: list[str | None] = []
    new = 0
    for job_id, url in wanted:
        sub_id = subscription_id(owner, url)
        if sub_id in owned[job_id]:
            answers.append(None)
        elif len(owned[job_id]) >= settings.WEBHOOK_MAX_PER_JOB:
            answers.append(f"at most {settings.WEBHOOK_MAX_PER_JOB} webhooks per client on one job.")
        elif live + new >= settings.WEBHOOK_MAX_PER_CLIENT:
            answers.append(
                f"at most {settings.WEBHOOK_MAX_PER_CLIENT} live webhook subscriptions per client "
                "(a subscription lives until its job ends and its `completed` delivery is done)."
            )
        else:
            owned[job_id].add(sub_id)
            new += 1
            answers.append(None)
    if new:
        try:
            admit_new_jobs()
        except SubmitRefused:
            full = "no new webhook subscriptions now: the service's Redis is past its high-water mark; retry later."
            answers = [full if answer is None else answer for answer in answers]
            new = 0
    return answers, new


@translate_outages
def subscribe(*, job_id: str, url: str, events: list[str], owner: str, done_body: dict[str, Any] | None = None) -> bool:
    """Subscribe `url` to the job's `events` for `owner`; False if that subscription exists,
    SubscriptionRefused over a cap (checked again here, atomically).

    `done_body`: the job is already done and this is its status body: the `completed` delivery is
    made at once (its stream may be gone) and the job is not watched."""
    client = redis_connection()
    sub_id = subscription_id(owner, url)
    subs_key = keys.webhook_subscriptions(job_id)
    live_key = keys.webhook_client(owner)
    now = time.time()
    subscription = {"url": url, "events": list(events), "owner": owner, "cursor": "0-0", "last_progress": 0}

    def attempt(pipe: redis.client.Pipeline) -> bool:
        subs = [json.loads(raw) for raw in pipe.hgetall(subs_key).values()]
        if pipe.hexists(subs_key, sub_id):
            return False
        if sum(sub["owner"] == owner for sub in subs) >= settings.WEBHOOK_MAX_PER_JOB:
            raise SubscriptionRefused(f"at most {settings.WEBHOOK_MAX_PER_JOB} webhooks per client on one job.")
        if pipe.zcount(live_key, now, "+inf") >= settings.WEBHOOK_MAX_PER_CLIENT:
            raise SubscriptionRefused(
                f"at most {settings.WEBHOOK_MAX_PER_CLIENT} live webhook subscriptions per client."
            )
        pipe.multi()
        pipe.zremrangebyscore(live_key, "-inf", now)
        if done_body is not None:
            pipe.hset(subs_key, sub_id, json.dumps({**subscription, "state": DONE}))
            if COMPLETED in events:
                _add_delivery(pipe, job_id=job_id, sub_id=sub_id, sub=subscription, event=COMPLETED, body=done_body,
                              now=now)  # fmt: skip
                pipe.zadd(live_key, {_live_member(job_id, sub_id): now + delivery_span()})
        else:
            pipe.hset(subs_key, sub_id, json.dumps({**subscription, "state": WATCHING}))
            pipe.zadd(keys.WEBHOOK_WATCHED, {job_id: now + settings.WEBHOOK_RETENTION})
            pipe.xadd(keys.WEBHOOK_WAKE, {"job": job_id}, maxlen=16, approximate=True)
            pipe.zadd(live_key, {_live_member(job_id, sub_id): now + settings.WEBHOOK_RETENTION})
        pipe.expire(live_key, int(settings.WEBHOOK_RETENTION + delivery_span()))
        pipe.expire(subs_key, settings.WEBHOOK_RETENTION)
        return True

    return client.transaction(attempt, subs_key, live_key, value_from_callable=True)


@translate_outages
def subscriptions(*, job_id: str, owner: str | None = None) -> list[dict[str, Any]]:
    """The job's subscriptions (only `owner`'s unless None) with the state of their newest
    deliveries (SHOWN_DELIVERIES each): reads only those subscriptions' records."""
    client = redis_connection()
    subs = {
        sub_id.decode(): json.loads(raw) for sub_id, raw in client.hgetall(keys.webhook_subscriptions(job_id)).items()
    }
    subs = {sub_id: sub for sub_id, sub in subs.items() if owner is None or sub["owner"] == owner}
    with client.pipeline(transaction=False) as pipe:
        for sub_id in subs:
            pipe.lrange(keys.webhook_subscription_deliveries(job_id, sub_id), -SHOWN_DELIVERIES, -1)
        lists = dict(zip(subs, pipe.execute(), strict=True))
    delivery_ids = [(sub_id, raw.decode()) for sub_id, ids in lists.items() for raw in ids]
    with client.pipeline(transaction=False) as pipe:
        for _, delivery_id in delivery_ids:
            pipe.hmget(keys.webhook_delivery(delivery_id), _SHOWN_FIELDS)
        records = pipe.execute()
    deliveries: dict[str, list[dict[str, Any]]] = {sub_id: [] for sub_id in subs}
    for (sub_id, delivery_id), values in zip(delivery_ids, records, strict=True):
        if values[0] is None:
            continue  # expired
        record = {
            name: (value.decode() if value is not None else None)
            for name, value in zip(_SHOWN_FIELDS, values, strict=True)
        }
        deliveries[sub_id].append(_shown(delivery_id, record))
    answer = []
    for sub_id, sub in sorted(subs.items(), key=lambda item: item[1]["url"]):
        own = deliveries[sub_id]
        answer.append(
            {
                "url": sub["url"],
                "owner": sub["owner"],
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


def _add_delivery(
    pipe: redis.client.Pipeline,
    *,
    job_id: str,
    sub_id: str,
    sub: dict[str, Any],
    event: str,
    body: dict[str, Any],
    now: float,
) -> str:
    """Queue on `pipe` (in MULTI) a new delivery: its record, its place in the subscription's list
    and in the due set, and its carrier RQ job."""
    delivery_id = "msg_" + uuid.uuid4().hex
    key = keys.webhook_delivery(delivery_id)
    pipe.hset(
        key,
        mapping={
            "job": job_id,
            "subscription": sub_id,
            "owner": sub["owner"],
            "url": sub["url"],
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
    listed = keys.webhook_subscription_deliveries(job_id, sub_id)
    pipe.rpush(listed, delivery_id)
    pipe.ltrim(listed, -SHOWN_DELIVERIES, -1)
    pipe.expire(listed, settings.WEBHOOK_RETENTION)
    pipe.zadd(keys.WEBHOOK_DUE, {delivery_id: now + QUEUED_GRACE})
    _enqueue(pipe, delivery_id, 1)
    return delivery_id


def _enqueue(pipe: redis.client.Pipeline, delivery_id: str, token: int) -> None:
    Queue(keys.WEBHOOK_QUEUE, connection=redis_connection()).enqueue(
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
    """How long an attempt holds its delivery before it is taken for lost (its worker died): its
    deadline (WEBHOOK_TIMEOUT, the look-up included) and a margin, so a second attempt starts only
    after the first one's socket was shut."""
    return settings.WEBHOOK_TIMEOUT + 10


def max_attempts() -> int:
    return 1 + len(settings.WEBHOOK_RETRY_DELAYS)


# Put back over its share of the worker's threads: due again this long after (no attempt spent).
DEFER_SECONDS = 1.0


@translate_outages
def claim(*, delivery_id: str, token: int, admit: Callable[[str, str], bool] | None = None) -> Delivery | None:
    """Start an attempt of a delivery; None when this carrier is stale (the delivery was queued
    again, or is done), when `admit(url, owner)` says no (it is due again in DEFER_SECONDS), or
    when its attempts are spent (the last one's lease ran out unrecorded: it ends failed). The
    attempt holds the delivery for `attempt_lease()` seconds and must end by its `deadline`."""
    key = keys.webhook_delivery(delivery_id)

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
            pipe.zrem(keys.WEBHOOK_DUE, delivery_id)
            pipe.hincrby(keys.WEBHOOK_METRICS, f"{record['event']} {FAILED}", 1)
            _ended(pipe, record)
            return None
        if admit is not None and not admit(record["url"], owner):
            pipe.multi()
            pipe.zadd(keys.WEBHOOK_DUE, {delivery_id: now + DEFER_SECONDS})
            return None
        attempts = int(record["attempts"]) + 1
        pipe.multi()
        pipe.hset(key, mapping={"attempts": attempts, "updated": now})
        pipe.zadd(keys.WEBHOOK_DUE, {delivery_id: now + attempt_lease()})
        return Delivery(delivery_id, record["job"], record["url"], owner, record["event"], record["body"], attempts,
                        token, now + settings.WEBHOOK_TIMEOUT)  # fmt: skip

    return redis_connection().transaction(attempt, key, value_from_callable=True)


def _ended(pipe: redis.client.Pipeline, record: dict[str, str]) -> None:
    """A delivery ended (in MULTI): a `completed` one ends its subscription's life for the cap."""
    if record.get("event") == COMPLETED and record.get("owner") is not None:
        pipe.zrem(keys.webhook_client(record["owner"]), _live_member(record["job"], record["subscription"]))


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
            _ended(pipe, {"event": delivery.event, "owner": delivery.owner, "job": delivery.job_id,
                          "subscription": subscription_id(delivery.owner, delivery.url)})  # fmt: skip
        pipe.hset(key, mapping=fields)
        pipe.hincrby(keys.WEBHOOK_METRICS, f"{delivery.event} {outcome}", 1)
        return outcome

    return redis_connection().transaction(attempt, key, value_from_callable=True)


@translate_outages
def delivery_counts() -> dict[tuple[str, str], int]:
    """Delivery attempts' outcomes so far, by (event, outcome): delivered, retried, failed."""
    counts = {}
    for field, value in redis_connection().hgetall(keys.WEBHOOK_METRICS).items():
        event, _, outcome = field.decode().partition(" ")
        counts[(event, outcome)] = int(value)
    return counts
