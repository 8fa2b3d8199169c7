"""What a request asks of the service beyond its input, read from its headers.

- `Prefer: wait=N` (RFC 7240): how long a client is willing to hold a poll or a submit for the
  job to finish, at most MAX_WAIT, answered with `Preference-Applied`.
- Held requests (long polls, waiting submits, event streams), counted in this web process. Each
  keeps a server thread (WSGI), so clients holding requests could hold every thread and starve
  everyone, health probes included. Two bounds, both per web process: a client holds at most
  MAX_HELD_PER_CLIENT at once, and all clients together at most MAX_HELD_REQUESTS (by default
  WEB_THREADS - 64: those threads stay free for health probes and ordinary polls, however many
  identities, say the addresses of an IPv6 /64, hold a request each). A request beyond either
  bound answers at once instead of waiting (its `Prefer: wait` is not applied; a stream sends
  the job's state and ends, and its client reconnects later). A process that is stopping holds
  nothing at all (api/shutdown.py).
- `Cancel-After` (Replicate's syntax): a deadline for the job a submit creates.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator

from django.conf import settings
from rest_framework.exceptions import ValidationError

from factorize_app.api.shutdown import draining
from factorize_app.tasks.fields import parse_digits

# --- Prefer: wait -------------------------------------------------------------------------


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


# --- held requests ------------------------------------------------------------------------


class HeldRequests:
    """Per client: how many of its requests this process holds open now (clients holding none
    have no entry, so the table is bounded by the threads), and how many in all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}
        self._total = 0

    def take(self, client: str) -> bool:
        """Hold one more of `client`'s requests, if it is under its cap and the process under its
        own; give_back() when done."""
        with self._lock:
            held = self._held.get(client, 0)
            if held >= settings.MAX_HELD_PER_CLIENT or self._total >= settings.MAX_HELD_REQUESTS:
                return False
            self._held[client] = held + 1
            self._total += 1
            return True

    def give_back(self, client: str) -> None:
        with self._lock:
            held = self._held.get(client, 0) - 1
            if held > 0:
                self._held[client] = held
            else:
                self._held.pop(client, None)
            self._total -= 1

    def held(self, client: str) -> int:
        with self._lock:
            return self._held.get(client, 0)

    def total(self) -> int:
        """Every client's held requests (for the log line of a drain)."""
        with self._lock:
            return self._total


HELD = HeldRequests()


@contextlib.contextmanager
def holding(client: str, wait: int | None) -> Iterator[int | None]:
    """The wait to apply to a request of `client`: `wait`, held as one of its requests until the
    block ends, while it and the process are under their caps; else None (answer at once,
    Prefer not applied). A process that is stopping holds nothing (api/shutdown.py), and the job
    service ends the waits it was holding."""
    if not wait:
        yield wait
        return
    if draining() or not HELD.take(client):
        yield None
        return
    try:
        yield wait
    finally:
        HELD.give_back(client)


# --- Cancel-After -------------------------------------------------------------------------

CANCEL_AFTER = "Cancel-After"
# `30`, `30s`, `5m`, `1h30m`, `2h`: bounded before conversion, as every number from a client.
_DURATION = re.compile(r"(?:(?P<h>[0-9]{1,4})h)?(?:(?P<m>[0-9]{1,6})m)?(?:(?P<s>[0-9]{1,8})s?)?")
MAX_CANCEL_AFTER = 30 * 86400


def requested_cancel_after(request) -> int | None:
    """Seconds from now after which a job this request creates is cancelled; None if not asked.
    A malformed or out-of-range value is a 400 naming the header."""
    raw = request.headers.get(CANCEL_AFTER)
    if raw is None:
        return None
    value = raw.strip()
    match = _DURATION.fullmatch(value) if value.isascii() else None
    if not value or match is None or not any(match.groupdict().values()):
        raise ValidationError({CANCEL_AFTER: ["A duration is required: seconds (`30`, `30s`), or `5m`, `1h30m`."]})
    seconds = 3600 * int(match["h"] or 0) + 60 * int(match["m"] or 0) + int(match["s"] or 0)
    if not 1 <= seconds <= MAX_CANCEL_AFTER:
        message = f"Ensure the deadline is at least 1 s and at most {MAX_CANCEL_AFTER} s."
        raise ValidationError({CANCEL_AFTER: [message]})
    return seconds
