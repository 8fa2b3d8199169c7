"""Subscriptions: a URL that wants some of a job's events, for the client who asked (its owner).

A client has at most WEBHOOK_MAX_PER_JOB subscriptions on one job and WEBHOOK_MAX_PER_CLIENT live
at once (watching a job, or its `completed` delivery under way), and none is made past Redis's
high-water mark. A subscription watches its job (`keys.WATCHED`) until the job ends, vanishes or
the wait runs out (WEBHOOK_RETENTION); the dispatcher turns the job's events into deliveries.
The subscriber is told the secret that signs its deliveries (webhooks.signing).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import redis
from django.conf import settings

from factorize_app import jobs
from factorize_app.jobs.connection import redis_connection
from factorize_app.jobs.errors import translate_outages
from factorize_app.tasks import TaskType
from factorize_app.webhooks import deliveries, keys
from factorize_app.webhooks.events import COMPLETED, delivered_body
from factorize_app.webhooks.signing import receiver_secret

WATCHING, DONE, EXPIRED = "watching", "done", "expired"


class SubscriptionRefused(Exception):
    """A subscription over a cap or past the high-water mark (the message says which)."""


def subscription_id(owner: str, url: str) -> str:
    """One subscription per client and URL on a job: re-posting the same input (the poll) with the
    same webhook subscribes nothing new."""
    return hashlib.sha256(f"{owner}\n{url}".encode()).hexdigest()[:16]


@translate_outages
def admit(*, owner: str, wanted: list[tuple[str, str]]) -> tuple[list[str | None], int]:
    """Whether `owner` may subscribe each (job id, url) of `wanted`, in order (None: yes, or it
    is subscribed already; else why not), and how many new subscriptions that makes."""
    connection = redis_connection()
    now = time.time()
    job_ids = list(dict.fromkeys(job_id for job_id, _ in wanted))
    with connection.pipeline(transaction=False) as pipe:
        pipe.zcount(keys.live(owner), now, "+inf")
        for job_id in job_ids:
            pipe.hgetall(keys.subscriptions(job_id))
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
            jobs.admit_new_jobs()
        except jobs.SubmitRefused:
            full = "no new webhook subscriptions now: the service's Redis is past its high-water mark; retry later."
            answers = [full if answer is None else answer for answer in answers]
            new = 0
    return answers, new


@translate_outages
def subscribe(*, task_type: TaskType, state: jobs.JobState, url: str, events: list[str], owner: str) -> str:
    """Subscribe `url` to the job's `events` for `owner` (nothing new if that subscription exists);
    the secret that signs `owner`'s deliveries to that receiver. SubscriptionRefused over a cap
    (checked again here, atomically). A job already done is not watched: its `completed` delivery
    is made at once (its event stream may be gone)."""
    job_id = state.job_id
    if not state.done:  # its events appended from now on (they are written only once read), then read again
        jobs.open_events(job_ids=[job_id], ttl=settings.WEBHOOK_RETENTION)
        state = jobs.get_status(job_id=job_id)
    sub_id = subscription_id(owner, url)
    subs_key = keys.subscriptions(job_id)
    live_key = keys.live(owner)
    now = time.time()
    subscription = {"url": url, "events": list(events), "owner": owner, "cursor": "0-0", "last_progress": 0}

    def attempt(pipe: redis.client.Pipeline) -> None:
        subs = [json.loads(raw) for raw in pipe.hgetall(subs_key).values()]
        if pipe.hexists(subs_key, sub_id):
            return
        if sum(sub["owner"] == owner for sub in subs) >= settings.WEBHOOK_MAX_PER_JOB:
            raise SubscriptionRefused(f"at most {settings.WEBHOOK_MAX_PER_JOB} webhooks per client on one job.")
        if pipe.zcount(live_key, now, "+inf") >= settings.WEBHOOK_MAX_PER_CLIENT:
            raise SubscriptionRefused(
                f"at most {settings.WEBHOOK_MAX_PER_CLIENT} live webhook subscriptions per client."
            )
        pipe.multi()
        pipe.zremrangebyscore(live_key, "-inf", now)
        if state.done:
            pipe.hset(subs_key, sub_id, json.dumps({**subscription, "state": DONE}))
            if COMPLETED in events:
                deliveries.add(pipe, job_id=job_id, sub_id=sub_id, owner=owner, url=url, event=COMPLETED,
                               body=delivered_body(task_type, state, COMPLETED), now=now)  # fmt: skip
                pipe.zadd(live_key, {keys.live_member(job_id, sub_id): now + deliveries.delivery_span()})
        else:
            pipe.hset(subs_key, sub_id, json.dumps({**subscription, "state": WATCHING}))
            pipe.zadd(keys.WATCHED, {job_id: now + settings.WEBHOOK_RETENTION})
            pipe.xadd(keys.WAKE, {"job": job_id}, maxlen=16, approximate=True)
            pipe.zadd(live_key, {keys.live_member(job_id, sub_id): now + settings.WEBHOOK_RETENTION})
        pipe.expire(live_key, int(settings.WEBHOOK_RETENTION + deliveries.delivery_span()))
        pipe.expire(subs_key, settings.WEBHOOK_RETENTION)

    redis_connection().transaction(attempt, subs_key, live_key)
    return receiver_secret(owner=owner, url=url)


@translate_outages
def subscriptions(*, job_id: str, owner: str | None = None) -> list[dict[str, Any]]:
    """The job's subscriptions (only `owner`'s unless None), each with the secret that signs its
    deliveries and the state of its newest ones: reads only those subscriptions' records."""
    subs = {
        sub_id.decode(): json.loads(raw)
        for sub_id, raw in redis_connection().hgetall(keys.subscriptions(job_id)).items()
    }
    subs = {sub_id: sub for sub_id, sub in subs.items() if owner is None or sub["owner"] == owner}
    shown = deliveries.shown(job_id=job_id, sub_ids=list(subs))
    return [
        {
            "url": sub["url"],
            "events": sub["events"],
            "state": _subscription_state(sub["state"], shown[sub_id]),
            "deliveries": shown[sub_id],
            "secret": receiver_secret(owner=sub["owner"], url=sub["url"]),
        }
        for sub_id, sub in sorted(subs.items(), key=lambda item: item[1]["url"])
    ]


def _subscription_state(state: str, shown: list[dict[str, Any]]) -> str:
    """pending (a delivery under way, or events still to come), else its last delivery's outcome
    (delivered, failed), `expired` (the job vanished or the wait ran out unseen) or `done` (the
    job ended and none of the events it wanted came)."""
    if state == WATCHING or any(delivery["status"] == deliveries.PENDING for delivery in shown):
        return deliveries.PENDING
    if shown:
        return shown[-1]["status"]
    return state
