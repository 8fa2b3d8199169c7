"""Input fields shared by task types, and the one bounded parse of a client's digits."""

import sys
from typing import Any

from rest_framework import serializers

# Python refuses to convert longer digit strings (a quadratic-time guard, 4300 by default);
# nothing a client sends is ever converted beyond it.
MAX_PARSED_DIGITS = sys.get_int_max_str_digits() or 4300


def parse_digits(text: str, *, max_digits: int) -> int | None:
    """A string of ASCII digits as an int, or None when it is not one or has more than
    `max_digits` significant digits: the length is checked before any conversion, so a hostile
    10,000-digit header or field costs a length check, not a ValueError deep in int()."""
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > min(max_digits, MAX_PARSED_DIGITS):
        return None
    return int(significant)


class WholeNumberField(serializers.Field):
    """An integer given as a JSON number or a string of digits, never a float or a boolean.

    Digit strings let JavaScript clients send integers beyond 2**53 without losing digits.
    Every string is bounded before conversion: by `max_digits`, else by the digits of
    `max_value`, else by MAX_PARSED_DIGITS.
    """

    default_error_messages = {
        "invalid": "A valid integer is required (a JSON integer or a string of digits).",
        "max_digits": "Ensure this number has no more than {max_digits} digits.",
        "min_value": "Ensure this value is greater than or equal to {min_value}.",
        "max_value": "Ensure this value is less than or equal to {max_value}.",
    }

    def __init__(self, *, min_value: int, max_value: int | None = None, max_digits: Any = None, **kwargs):
        self.min_value = min_value
        self.max_value = max_value
        self._max_digits = max_digits  # an int, or a callable read at validation time (a setting)
        super().__init__(**kwargs)

    @property
    def max_digits(self) -> int | None:
        return self._max_digits() if callable(self._max_digits) else self._max_digits

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, (int, str)):
            self.fail("invalid")
        max_digits = self.max_digits
        if isinstance(data, str):
            if not (data.isascii() and data.isdigit()):
                self.fail("invalid")
            value = parse_digits(data, max_digits=max_digits or self._digits_of_max_value())
            if value is None:
                self._fail_too_long(max_digits)
        else:
            value = data
            if max_digits is not None and abs(value) >= 10**max_digits:
                self.fail("max_digits", max_digits=max_digits)
        if value < self.min_value:
            self.fail("min_value", min_value=self.min_value)
        if self.max_value is not None and value > self.max_value:
            self.fail("max_value", max_value=self.max_value)
        return value

    def _digits_of_max_value(self) -> int:
        return len(str(abs(self.max_value))) if self.max_value is not None else MAX_PARSED_DIGITS

    def _fail_too_long(self, max_digits: int | None):
        if max_digits is not None:
            self.fail("max_digits", max_digits=max_digits)
        if self.max_value is not None:
            self.fail("max_value", max_value=self.max_value)
        self.fail("max_digits", max_digits=MAX_PARSED_DIGITS)

    def to_representation(self, value: int) -> int:
        return int(value)


class TextField(serializers.CharField):
    """A JSON string, and only that: DRF's CharField takes the number 12 as "12", although the
    schema it documents says `type: string` (so fuzzers rightly call it a contract breach)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# --- file outputs (docs/files.md, "File outputs") ---------------------------------------------


# A result field whose value is a file: the handler gives a `pathlib.Path`, `bytes` or an
# `OutputFile`; the worker stores it outside Redis (factorize_app/jobs/result_files.py) and clients see
# this object. `content_type`: what the bytes are, unless an `OutputFile` says otherwise.
class FileOutput(serializers.Serializer):
    """A file the job returned: GET `url` (as the job's owner) for its bytes, until the job's
    result expires."""

    url = serializers.CharField(help_text="GET it for the bytes (the job's owners only, until the result expires).")
    id = serializers.CharField(help_text="The file's id, `file_<32 hex>`.")
    name = serializers.CharField(help_text="A file name for saving it.")
    size = serializers.IntegerField(help_text="In bytes.")
    content_type = serializers.CharField(help_text="Its media type, e.g. `image/png`.")
    sha256 = serializers.CharField(help_text="Hex SHA-256 of the bytes, to check a download.")

    def __init__(self, *args, content_type: str = "application/octet-stream", **kwargs):
        self.content_type = content_type
        super().__init__(*args, **kwargs)
