"""The `Cancel-After` request header (Replicate's syntax): a deadline for the job a submit creates."""

from __future__ import annotations

import re

from rest_framework.exceptions import ValidationError

HEADER = "Cancel-After"
# `30`, `30s`, `5m`, `1h30m`, `2h`: bounded before conversion, as every number from a client.
_DURATION = re.compile(r"(?:(?P<h>[0-9]{1,4})h)?(?:(?P<m>[0-9]{1,6})m)?(?:(?P<s>[0-9]{1,8})s?)?")
MAX_SECONDS = 30 * 86400


def requested_cancel_after(request) -> int | None:
    """Seconds from now after which a job this request creates is cancelled; None if not asked.
    A malformed or out-of-range value is a 400 naming the header."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    value = raw.strip()
    match = _DURATION.fullmatch(value) if value.isascii() else None
    if not value or match is None or not any(match.groupdict().values()):
        raise ValidationError({HEADER: ["A duration is required: seconds (`30`, `30s`), or `5m`, `1h30m`."]})
    seconds = 3600 * int(match["h"] or 0) + 60 * int(match["m"] or 0) + int(match["s"] or 0)
    if not 1 <= seconds <= MAX_SECONDS:
        raise ValidationError({HEADER: [f"Ensure the deadline is at least 1 s and at most {MAX_SECONDS} s."]})
    return seconds
