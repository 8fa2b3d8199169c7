"""Every Redis key of the webhooks area, named in this one place, under the job service's prefix
(`factorize:`); and the RQ queue the webhooks worker serves."""

from __future__ import annotations

from factorize_app.jobs.keys import OURS

PREFIX = OURS + "webhooks:"
# A job's subscriptions (subscription id -> JSON: url, events, owner, cursor, state).
SUBSCRIPTIONS_PREFIX = PREFIX + "subscriptions:"
# A subscription's newest deliveries, in order (a list of delivery ids), and one delivery's hash.
SUBSCRIPTION_DELIVERIES_PREFIX = PREFIX + "sub-deliveries:"
DELIVERY_PREFIX = PREFIX + "delivery:"
# A client's live subscriptions (`live_member`s, scored by when they end at the latest: watching,
# or their `completed` delivery still under way), counted against its cap.
LIVE_PREFIX = PREFIX + "client:"
# Jobs with a subscription still waiting for events, scored by when the wait is given up.
WATCHED = PREFIX + "watched"
# Every pending delivery, scored by when the dispatcher looks at it next: a retry's due time, an
# attempt's lease end (its worker died), a queued delivery's grace (lost between pop and start).
DUE = PREFIX + "due"
# The dispatcher's lease (one across replicas) and its wake-up stream (a new subscription).
DISPATCHER = PREFIX + "dispatcher"
WAKE = PREFIX + "wake"
# Delivery outcomes for /metrics ("<event> <outcome>" -> count).
METRICS = OURS + "metrics:webhook_deliveries"
QUEUE = "webhooks"  # the RQ queue of the deliveries' carrier jobs, which the webhooks worker serves


def subscriptions(job_id: str) -> str:
    return SUBSCRIPTIONS_PREFIX + job_id


def subscription_deliveries(job_id: str, sub_id: str) -> str:
    return f"{SUBSCRIPTION_DELIVERIES_PREFIX}{job_id}:{sub_id}"


def delivery(delivery_id: str) -> str:
    return DELIVERY_PREFIX + delivery_id


def live(owner: str) -> str:
    """Sorted set: `owner`'s live subscriptions (members: `live_member`)."""
    return LIVE_PREFIX + owner


def live_member(job_id: str, sub_id: str) -> str:
    return f"{job_id} {sub_id}"
