"""Input fields shared by task types, and the one bounded parse of a client's digits."""

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
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


@dataclass(frozen=True)
class FileReference:
    """A file named in an input, as the client gave it, checked for its form only: the job service
    turns it into the stored file's identity (`jobs/file_inputs.py`) before the job id is made."""

    kind: str  # DATA_URI, URL or UPLOAD
    value: str  # the URL, the upload's id, or the data: URI's payload (still encoded)
    content_type: str = ""  # as the client declared it (a data: URI's media type)
    base64: bool = False  # a data: URI's payload is base64 (else percent-encoded)


DATA_URI, URL, UPLOAD = "data", "url", "upload"
# What a handler's input holds for a file field once stored: its identity is the bytes (sha256)
# and their type; the name is the client's and never part of the job id (jobs/ids.py).
STORED_FILE_KEYS = ("sha256", "size", "content_type", "name")
_UPLOAD_ID = re.compile(r"^file_[0-9a-f]{32}$")


class FileInput(serializers.Field):
    """A file in a job's input, given as a JSON string in one of three forms: a `data:` URI
    (base64 or percent-encoded), an http(s) URL the service fetches, or an upload's id
    (`file_<hex>`, from `POST /files`) or URL (`<this service>/files/file_<hex>`).

    Only the form is checked here (plain computation); the job service decodes (a data: URI's
    length bounded before decoding), fetches, stores and checks the bytes (their size, their sniffed
    type against `content_types`, and `check(path)` if given, whose ValueError refuses the file
    with its message). The handler receives a `pathlib.Path`.
    """

    default_error_messages = {
        "invalid": "A file is required: a data: URI, an http(s) URL, or an upload's id (file_...) or URL.",
        "data_uri": "Not a valid data: URI (data:<type>[;base64],<data>).",
        "content_type": "A file of type {types} is expected, not {content_type}.",
    }

    def __init__(
        self,
        *,
        content_types: tuple[str, ...],
        max_bytes: int | Callable[[], int] | None = None,
        check: Callable[[Any], None] | None = None,
        **kwargs,
    ):
        self.content_types = tuple(content_types)
        self._max_bytes = max_bytes  # None: the FILE_INPUT_MAX_BYTES setting, read at validation
        self.check = check
        super().__init__(**kwargs)

    @property
    def max_bytes(self) -> int:
        limit = self._max_bytes() if callable(self._max_bytes) else self._max_bytes
        return min(limit, settings.FILE_INPUT_MAX_BYTES) if limit else settings.FILE_INPUT_MAX_BYTES

    def to_internal_value(self, data: Any) -> FileReference:
        if not isinstance(data, str) or not data or len(data) > MAX_FILE_STRING or not data.isascii():
            self.fail("invalid")
        if data.startswith("data:"):
            return self._data_uri(data)
        if _UPLOAD_ID.match(data):
            return FileReference(UPLOAD, data)
        if data.startswith(("http://", "https://")):
            # An upload's URL on this service is an upload: the job service tells it from another host's.
            return FileReference(URL, data)
        self.fail("invalid")

    def _data_uri(self, data: str) -> FileReference:
        header, comma, payload = data[len("data:") :].partition(",")
        if not comma or len(header) > 200:
            self.fail("data_uri")
        media_type, *parameters = header.split(";")
        encoded = bool(parameters) and parameters[-1].strip().lower() == "base64"
        media_type = media_type.strip().lower() or "text/plain"
        if media_type not in self.content_types:
            self.fail("content_type", types=" or ".join(self.content_types), content_type=media_type)
        return FileReference(DATA_URI, payload, content_type=media_type, base64=encoded)

    def to_representation(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: value.get(key) for key in STORED_FILE_KEYS}
        return value.value if isinstance(value, FileReference) else value


MAX_FILE_STRING = 64 * 1024 * 1024  # characters: past any body limit, a guard for direct callers
