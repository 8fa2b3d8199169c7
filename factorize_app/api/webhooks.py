"""Webhooks on the API: the two submit fields (`webhook`, `webhook_events_filter`), taken out of
the body before the task type sees it (they are not part of the input, so not of the job id),
the subscription after the submit, and the answer of `GET /jobs/<id>/webhooks`."""

from __future__ import annotations

import dataclasses
from typing import Any

from django.conf import settings
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from factorize_app import jobs
from factorize_app.api.authentication import client_identity
from factorize_app.api.throttling import SUBMIT, rate_limit
from factorize_app.tasks import TaskType
from factorize_app.webhooks import subscriptions
from factorize_app.webhooks.events import DEFAULT_EVENTS, EVENTS
from factorize_app.webhooks.targets import WebhookRefused, target

FIELDS = ("webhook", "webhook_events_filter")


class WebhookSerializer(serializers.Serializer):
    webhook = serializers.CharField(
        required=False,
        max_length=2000,
        help_text="Where to POST the job's status body (plus `event`) as it changes, signed as Standard "
        "Webhooks specify. An http(s) URL whose host is in the service's WEBHOOK_ALLOWED_HOSTS.",
    )
    webhook_events_filter = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENTS),
        required=False,
        allow_empty=False,
        max_length=len(EVENTS),
        help_text="Which events to deliver: `start`, `progress` (at most one per 500 ms, none while the "
        "previous one is still pending), `completed` "
        '(any end). Default `["completed"]`.',
    )

    def validate_webhook(self, url: str) -> str:
        if settings.EXECUTION_MODE == "sync":
            raise ValidationError("webhooks need the job queue (EXECUTION_MODE=sync answers at once).")
        if not settings.WEBHOOK_SECRET:
            raise ValidationError("webhooks are off here: the service has no WEBHOOK_SECRET to sign them.")
        try:
            target(url)
        except WebhookRefused as exc:
            raise ValidationError(str(exc)) from None
        return url

    def validate(self, attrs):
        if "webhook_events_filter" in attrs and "webhook" not in attrs:
            raise ValidationError({"webhook": ["`webhook_events_filter` needs a `webhook`."]})
        return attrs


class SubscriptionDeliverySerializer(serializers.Serializer):
    webhook_id = serializers.CharField(help_text="The `webhook-id` header of every attempt of this delivery.")
    event = serializers.CharField(help_text="`start`, `progress` or `completed`.")
    status = serializers.CharField(help_text="`pending`, `delivered` or `failed`.")
    attempts = serializers.IntegerField()
    last_status = serializers.IntegerField(allow_null=True, help_text="The receiver's last HTTP status.")
    last_error = serializers.CharField(allow_null=True, help_text="Why the last attempt failed.")
    created = serializers.FloatField(help_text="Unix time.")
    updated = serializers.FloatField(help_text="Unix time of the last attempt.")


class SubscriptionSerializer(serializers.Serializer):
    url = serializers.CharField()
    secret = serializers.CharField(
        help_text="The `whsec_` secret that signs this client's deliveries to this receiver (scheme, host, "
        "port): the receiver verifies them with it (the Standard Webhooks libraries).",
    )
    events = serializers.ListField(child=serializers.CharField(), help_text="Its `webhook_events_filter`.")
    state = serializers.CharField(
        help_text="`pending`: a delivery under way or events to come; else its last delivery's outcome; "
        "expired: the job vanished unseen; done: none of its events came.",
    )
    deliveries = SubscriptionDeliverySerializer(many=True)


class WebhooksSerializer(serializers.Serializer):
    job_id = serializers.CharField()
    subscriptions = SubscriptionSerializer(many=True)


def take_webhook(data: Any) -> tuple[Any, dict[str, Any] | None]:
    """`data` without the webhook fields, and the validated subscription request (None if none);
    a ValidationError naming `webhook` (or the filter) when it is refused."""
    if not isinstance(data, dict) or not any(name in data for name in FIELDS):
        return data, None
    rest = {name: value for name, value in data.items() if name not in FIELDS}
    serializer = WebhookSerializer(data={name: data[name] for name in FIELDS if name in data})
    serializer.is_valid(raise_exception=True)
    fields = serializer.validated_data
    return rest, {"url": fields["webhook"], "events": fields.get("webhook_events_filter", DEFAULT_EVENTS)}


def admit(task_type: TaskType, wanted: dict[int, tuple[dict, dict[str, Any]]], request) -> dict[int, str]:
    """Why each item of `wanted` (index -> its validated input and webhook) may not subscribe:
    over the client's caps per job or live at once, or past Redis's high-water mark. The new
    subscriptions the rest make count as submits against the client's allowance (429 beyond)."""
    if not wanted:
        return {}
    owner = client_identity(request).name
    order = list(wanted)
    answers, new = subscriptions.admit(
        owner=owner, wanted=[(jobs.job_id_for(task_type, wanted[i][0]), wanted[i][1]["url"]) for i in order]
    )
    allowance = rate_limit(SUBMIT, request.META, client=owner)
    if new and allowance is not None:
        jobs.count_request(rate_limit=dataclasses.replace(allowance, cost=new))
    return {index: answer for index, answer in zip(order, answers, strict=True) if answer is not None}


def subscribe(task_type: TaskType, state: jobs.JobState, webhook: dict[str, Any], *, owner: str) -> str:
    """Subscribe after the submit (a job already done gets its `completed` delivery at once); the
    secret that signs this client's deliveries to that receiver. A ValidationError naming
    `webhook` if a concurrent request took the last room under a cap."""
    try:
        return subscriptions.subscribe(
            task_type=task_type, state=state, url=webhook["url"], events=list(webhook["events"]), owner=owner
        )
    except subscriptions.SubscriptionRefused as exc:
        raise ValidationError({"webhook": [str(exc)]}) from None


def webhooks_body(*, job_id: str, owner: str | None) -> dict[str, Any]:
    """`GET /jobs/<id>/webhooks`: the subscriptions of `owner` (every one's for None), each with
    its receiver's signing secret, and their deliveries."""
    return {"job_id": job_id, "subscriptions": subscriptions.subscriptions(job_id=job_id, owner=owner)}
