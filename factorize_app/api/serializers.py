"""Every serializer of the API, in one place.

Requests: what the task types do not declare themselves (the batch envelope, the input as the
browsable API's HTML form shows and sends it) and the submit's webhook fields. Responses: the
bodies that `responses.py` and the job service build, described for the OpenAPI schema (and so
for the docs and the schema-driven tests), not used for rendering.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

from django.conf import settings
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.fields import empty
from rest_framework.utils import html

from factorize_app import jobs
from factorize_app.tasks import TaskType
from factorize_app.tasks.fields import FileOutput, TextField
from factorize_app.webhooks.events import DEFAULT_EVENTS, EVENTS
from factorize_app.webhooks.targets import MAX_URL_LENGTH, WebhookRefused, target

STATUSES = [jobs.QUEUED, jobs.STARTED, jobs.FINISHED, jobs.FAILED, jobs.CANCELED, jobs.ABORTED]
# A submit's webhook subscription, beside its input (not part of it, so not of the job id).
WEBHOOK_FIELDS = ("webhook", "webhook_events_filter")


# --- requests: batches and forms ----------------------------------------------------------


@cache
def batch_serializer(task_type: TaskType) -> type[serializers.Serializer]:
    """`{"items": [<input>, ...]}`; a type with one input field also takes `{"<field>s": [<value>, ...]}`
    (`{"numbers": [...]}` for factorization). Only the envelope is checked here: items are validated
    one by one by the view, so a bad item gets its own error and the others still run."""
    field = task_type.input_fields[0] if len(task_type.input_fields) == 1 else None
    plural = f"{field}s" if field else None

    def validate(self, attrs):
        key = "items"
        if plural and attrs.get(plural) is not None:
            if "items" in attrs:
                raise ValidationError({plural: [f"Send either `items` or `{plural}`, not both."]})
            key, attrs["items"] = plural, [{field: value} for value in attrs.pop(plural)]
        if "items" not in attrs:
            raise ValidationError({plural or "items": ["This field is required."]})
        if len(attrs["items"]) > settings.MAX_BATCH:
            raise ValidationError({key: [f"At most {settings.MAX_BATCH} items per batch (MAX_BATCH)."]})
        return attrs

    def items_field(help_text: str) -> serializers.ListField:
        return serializers.ListField(
            # Any item, null included, is the view's to judge: a bad item fails alone.
            child=serializers.JSONField(allow_null=True),
            required=False,
            allow_empty=False,
            help_text=f"{help_text} At most MAX_BATCH (default 1000).",
        )

    fields = {"items": items_field(f"The inputs, each as `POST /{task_type.path}` takes it.")}
    if plural:
        fields[plural] = items_field(f"Or just the `{field}` of each input.")
    name = task_type.class_prefix + "BatchInput"
    return type(name, (serializers.Serializer,), {**fields, "validate": validate})


# Inputs DRF's HTML form cannot show ("Lists are not currently supported in HTML input"): in the
# browsable API's form they are a textarea of JSON instead.
JSON_IN_FORMS = (serializers.ListField, serializers.DictField, serializers.ListSerializer)
FILE_FORM_TEMPLATE = "factorize_app/file_input.html"
FILES_PATH = "/files"  # uploads (the files API)


@cache
def form_serializer(task_type: TaskType) -> type[serializers.Serializer]:
    """The input as the browsable API's form and raw-data box show it: prefilled with the type's
    first example, each list or mapping field a JSON textarea. For showing and reading the HTML
    form only: every input, a form's too, is validated by the type's own serializer."""
    declared = task_type.input_serializer().fields
    fields = {
        name: serializers.JSONField(
            required=field.required, label=field.label, help_text=field.help_text, style={"rows": 6}
        )
        for name, field in declared.items()
        if isinstance(field, JSON_IN_FORMS)
    }
    for name in task_type.file_fields:
        fields[name] = file_form_field(declared, name, task_type.file_fields)
    example = task_type.examples[0] if task_type.examples else {}

    def get_initial(self):
        return {**super(serializer, self).get_initial(), **{k: v for k, v in example.items() if k in self.fields}}

    serializer = type(
        task_type.class_prefix + "Form", (task_type.input_serializer,), {**fields, "get_initial": get_initial}
    )
    return serializer


def file_form_field(declared: dict[str, serializers.Field], name: str, file_fields: tuple[str, ...]) -> TextField:
    """A file field in the form: its text (an id, a URL, a data: URI) and a file chooser whose file
    a small script uploads (POST /files), putting the upload's id in the text; task endpoints stay JSON."""
    field = declared[name]
    others = [other for other, f in declared.items() if not f.required and other not in file_fields]
    style = {"template": FILE_FORM_TEMPLATE, "upload_url": FILES_PATH, "accept": ",".join(field.content_types),
             "optional": " ".join(others)}  # fmt: skip
    return TextField(required=field.required, label=field.label, help_text=field.help_text, style=style)


def form_input(task_type: TaskType, data: Any) -> Any:
    """A submit as JSON would send it: an HTML form's fields read as DRF reads a form (a missing
    checkbox is false, an empty optional field absent), and its JSON textareas parsed. Text that is
    not JSON stays text, so the type's own serializer refuses it with its usual message. Any other
    body is returned as it is."""
    if not html.is_html_input(data):
        return data
    fields = form_serializer(task_type)().fields
    body = {key: data.get(key) for key in data if key not in fields}  # the webhook fields, say
    for name, field in fields.items():
        value = field.get_value(data)
        if value is empty:
            continue
        if isinstance(field, serializers.JSONField):
            if value == "" and not field.required:  # an optional JSON textarea left empty: absent
                continue
            try:
                value = json.loads(value)
            except ValueError:
                value = str(value)
        body[name] = value
    return body


# --- requests: the webhook fields -------------------------------------------------------


class WebhookSerializer(serializers.Serializer):
    webhook = serializers.CharField(
        required=False,
        max_length=MAX_URL_LENGTH,
        help_text="Where to POST the job's status body (plus `event`) as it changes, signed as Standard "
        "Webhooks specify. An http(s) URL whose host is in the service's WEBHOOK_ALLOWED_HOSTS.",
    )
    webhook_events_filter = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENTS),
        required=False,
        allow_empty=False,
        max_length=len(EVENTS),
        help_text="Which events to deliver: `start`, `progress` and `output` (a streamed piece; the body's "
        "`output` holds every piece so far) at most one of the two per 500 ms, none while the previous one is "
        'still pending, `completed` (any end). Default `["completed"]`.',
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


def take_webhook(data: Any) -> tuple[Any, dict[str, Any] | None]:
    """`data` without the webhook fields, and the validated subscription request (None if none);
    a ValidationError naming `webhook` (or the filter) when it is refused."""
    if not isinstance(data, dict) or not any(name in data for name in WEBHOOK_FIELDS):
        return data, None
    rest = {name: value for name, value in data.items() if name not in WEBHOOK_FIELDS}
    serializer = WebhookSerializer(data={name: data[name] for name in WEBHOOK_FIELDS if name in data})
    serializer.is_valid(raise_exception=True)
    fields = serializer.validated_data
    return rest, {"url": fields["webhook"], "events": fields.get("webhook_events_filter", DEFAULT_EVENTS)}


# --- responses (for the schema) ----------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class ConflictSerializer(ErrorSerializer):
    status = serializers.ChoiceField(choices=STATUSES)


class SetupErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="The exception, in one line (the traceback is in the worker log).")
    since = serializers.DateTimeField(help_text="When it first failed (since its last successful setup).")
    last = serializers.DateTimeField(help_text="When it last failed.")
    restarts = serializers.IntegerField(help_text="How many times it has failed since then.")


class QueueStatsSerializer(serializers.Serializer):
    name = serializers.CharField()
    queued = serializers.IntegerField(help_text="Live queued jobs (expired ones are not counted).")
    started = serializers.IntegerField()
    finished = serializers.IntegerField()
    failed = serializers.IntegerField()
    canceled = serializers.IntegerField(help_text="Cancelled (DELETE) or stopped at their deadline while running.")
    aborted = serializers.IntegerField(help_text="Their Cancel-After deadline passed before they started.")
    workers = serializers.IntegerField(help_text="Live workers listening to this queue.")
    workers_lost = serializers.IntegerField(
        help_text="Workers of this queue that died without unregistering (killed: out of memory, or by their "
        "watchdog), as found by the next worker started on their host."
    )
    setup_error = SetupErrorSerializer(
        allow_null=True, help_text="Its workers' model setup fails (they are restarted); null while it does not."
    )


class TaskInfoSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    load = serializers.IntegerField(allow_null=True, help_text="Live pending jobs; null in sync mode.")


def _nullable(field: serializers.Field) -> serializers.Field:
    """An unbound copy that also allows null. DRF re-creates a serializer's declared fields from
    their constructor arguments (Field.__deepcopy__) each time it is instantiated, so allow_null
    must be one of those arguments: an attribute set on the copy alone would be lost."""
    field = copy.deepcopy(field)
    field._kwargs["allow_null"] = True
    field.allow_null = True
    return field


@cache
def status_serializer(task_type: TaskType) -> type[serializers.Serializer]:
    """The pending/done body of one task type: its input, its result (null until done), the job."""
    input_fields = {name: copy.deepcopy(field) for name, field in task_type.input_serializer().fields.items()}
    result_fields = {name: _nullable(field) for name, field in task_type.result_serializer().fields.items()}
    fields = {
        "done": serializers.BooleanField(help_text="True once the job finished or failed."),
        **input_fields,
        **result_fields,
        jobs.RESULT_FILE: FileOutput(
            required=False,
            help_text="Only for a result too large to keep in Redis (its JSON over RESULT_MAX_INLINE_BYTES): the "
            "result's fields as one JSON object in a file (`application/json`), null above; file fields stay.",
        ),
        "load": serializers.IntegerField(help_text="Live pending jobs of this task type."),
        # The type's prefix in the pattern also tells the bodies apart in GET /jobs/{id}'s oneOf
        # (task types with the same fields would otherwise all match).
        "job_id": serializers.RegexField(
            rf"^{task_type.name}-[0-9a-f]{{32}}$", help_text="Derived from the type and the input."
        ),
        "status": serializers.ChoiceField(choices=STATUSES),
        "error": serializers.CharField(allow_null=True, help_text="One line, when the job failed."),
        "traceback": serializers.CharField(
            required=False,
            allow_null=True,
            help_text="GET /jobs/{id} of a failed job, for staff and its owner by key or login: the full traceback.",
        ),
        "progress": ProgressSerializer(
            allow_null=True, help_text="While the job runs, what its handler last reported; else null."
        ),
        "output": serializers.ListField(
            child=serializers.JSONField(),
            required=False,
            help_text="Only for a job whose handler streams its output: the pieces it yielded so far, in order "
            "(while it runs, and after: kept when it is stopped). Each also came as an `output` event.",
        ),
        "webhook_secret": serializers.CharField(
            required=False,
            help_text="Only in a submit's answer with a `webhook`: the `whsec_` secret that signs this client's "
            "deliveries to that receiver (see Webhooks).",
        ),
    }
    name = task_type.class_prefix + "Status"
    return type(name, (serializers.Serializer,), fields)


class ProgressSerializer(serializers.Serializer):
    fraction = serializers.FloatField(
        allow_null=True, min_value=0, max_value=1, help_text="Done so far, 0 to 1; null if unknown."
    )
    message = serializers.CharField(help_text="What the handler is doing, e.g. `ECM, curve 31 of up to 250`.")


class InvalidItemSerializer(serializers.Serializer):
    done = serializers.BooleanField()
    job_id = serializers.CharField(allow_null=True)
    status = serializers.RegexField(r"^invalid$", help_text="Always `invalid`.")
    errors = serializers.DictField(help_text="Each offending field with its messages.")


def submit_serializer(task_type: TaskType) -> type[serializers.Serializer]:
    """A submit's body: the task type's input and, beside it (not part of the input), the
    optional webhook subscription. Named as the input, whose component it documents."""
    return _with_webhook(task_type.input_serializer)


@cache
def _with_webhook(serializer: type[serializers.Serializer]) -> type[serializers.Serializer]:
    return type(serializer.__name__, (serializer, WebhookSerializer), {"__doc__": serializer.__doc__})


class SubscriptionDeliverySerializer(serializers.Serializer):
    webhook_id = serializers.CharField(help_text="The `webhook-id` header of every attempt of this delivery.")
    event = serializers.CharField(help_text="`start`, `progress`, `output` or `completed`.")
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
