"""The `Prefer: wait=N` request header (RFC 7240): how long a client is willing to hold a poll."""

from django.conf import settings


def requested_wait(request) -> int | None:
    """Seconds to hold for the job to finish, capped by MAX_WAIT; None if not asked for (or malformed)."""
    for preference in request.headers.get("Prefer", "").split(","):
        name, _, value = preference.split(";", 1)[0].strip().partition("=")
        if name.strip().lower() == "wait":
            value = value.strip().strip('"')
            if value.isascii() and value.isdigit():
                return min(int(value), settings.MAX_WAIT)
            return None
    return None


def preference_applied(wait: int | None) -> dict[str, str]:
    return {} if wait is None else {"Preference-Applied": f"wait={wait}"}
