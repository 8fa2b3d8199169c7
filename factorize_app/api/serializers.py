"""Request serializers the task types do not declare themselves: the batch envelope, and the
input as the browsable API's HTML form shows and sends it."""

import json
from functools import cache
from typing import Any

from django.conf import settings
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.fields import empty
from rest_framework.utils import html

from factorize_app.tasks import TaskType


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
    example = task_type.examples[0] if task_type.examples else {}

    def get_initial(self):
        return {**super(serializer, self).get_initial(), **{k: v for k, v in example.items() if k in self.fields}}

    serializer = type(
        task_type.class_prefix + "Form", (task_type.input_serializer,), {**fields, "get_initial": get_initial}
    )
    return serializer


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
            try:
                value = json.loads(value)
            except ValueError:
                value = str(value)
        body[name] = value
    return body
