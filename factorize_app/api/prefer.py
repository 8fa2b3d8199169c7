"""The `Prefer: wait=N` request header (RFC 7240): how long a client is willing to hold a poll."""

from django.conf import settings

from factorize_app.tasks.fields import parse_digits


def requested_wait(request) -> int | None:
    """Seconds to hold for the job to finish, capped by MAX_WAIT; None if not asked for (or malformed)."""
    return parse_wait(request.headers.get("Prefer", ""))


def parse_wait(prefer: str) -> int | None:
    """requested_wait() of a `Prefer` header's value (the lean lane reads it from the environ).

    A wait longer than MAX_WAIT, however many digits it has, is MAX_WAIT (never converted whole)."""
    for preference in prefer.split(","):
        name, _, value = preference.split(";", 1)[0].strip().partition("=")
        if name.strip().lower() == "wait":
            value = value.strip().strip('"')
            if not (value.isascii() and value.isdigit()):
                return None
            wait = parse_digits(value, max_digits=len(str(settings.MAX_WAIT)))
            return settings.MAX_WAIT if wait is None else min(wait, settings.MAX_WAIT)
    return None


def preference_applied(wait: int | None) -> dict[str, str]:
    return {} if wait is None else {"Preference-Applied": f"wait={wait}"}
