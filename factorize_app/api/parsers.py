"""DRF's JSON parser, bounded in nesting depth: no input of any task type nests deeply."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

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
