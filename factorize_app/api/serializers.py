"""Request serializers the task types do not declare themselves: the batch envelope."""

from functools import cache

from django.conf import settings
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

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
