"""The request parsers: DRF's JSON parser, bounded in nesting depth (no input of any task type
nests deeply), and its form and multipart parsers, taking each field once."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import DataAndFiles, FormParser, JSONParser, MultiPartParser

# Deeper than any input or batch envelope needs (a batch item of a nested input is 3 or 4 levels).
MAX_JSON_DEPTH = 32


class BoundedJSONParser(JSONParser):
    """A body nested 10,000 levels deep is a 400, not a RecursionError (a 500): the stdlib parser
    recurses per level, and so would every serializer walking the result."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels") from None
        if nesting_depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels")
        return data


def nesting_depth(data: Any, limit: int) -> int:
    """Depth of nested lists and objects (a scalar is 0), counted without recursion and
    stopping once past `limit`."""
    deepest, level = 0, [(data, 1)]
    while level:
        value, depth = level.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        level.extend((child, depth + 1) for child in children)
    return deepest


class _EachFieldOnce:
    """A form or multipart body takes each field once; a repeated one is a 400 naming it.

    The API documents JSON bodies only (SPECTACULAR_SETTINGS["PARSER_WHITELIST"]); forms stay for
    the browsable API's HTML form, which posts each scalar field once (inputs it cannot hold, such
    as lists, go through its raw JSON form). DRF reads a repeated field by its type, silently: a
    scalar field takes the last value, a list field every value. So a body carrying each field
    twice (a client sending its form and multipart encodings at once, as openapi-python-client
    does for an operation documenting all three content types) ran a batch of 3 as 6 jobs, and
    made a webhook filter a string. Lists are JSON's: a form has no unambiguous way to say one."""

    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        data, files = (parsed.data, parsed.files) if isinstance(parsed, DataAndFiles) else (parsed, None)
        sent = Counter({name: len(values) for name, values in data.lists()})
        if files is not None:
            sent.update({name: len(values) for name, values in files.lists()})
        repeated = {name: count for name, count in sent.items() if count > 1}
        if repeated:
            raise ValidationError(
                {
                    name: [
                        f"Sent {count} times in one {self.media_type} body, which takes each field once: "
                        "send lists (a batch, webhook_events_filter) as JSON (Content-Type: application/json)."
                    ]
                    for name, count in repeated.items()
                }
            )
        return parsed


class SingleValueFormParser(_EachFieldOnce, FormParser):
    pass


class SingleValueMultiPartParser(_EachFieldOnce, MultiPartParser):
    pass
