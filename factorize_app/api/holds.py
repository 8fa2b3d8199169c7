"""Requests held open (long polls, waiting submits, event streams), counted in this web process.

Each held request keeps a server thread (WSGI), so clients holding requests could hold every
thread and starve everyone, health probes included. Two bounds, both per web process: a client
holds at most MAX_HELD_PER_CLIENT at once, and all clients together at most MAX_HELD_REQUESTS
(by default WEB_THREADS - 64: those threads stay free for health probes and ordinary polls,
however many identities, say the addresses of an IPv6 /64, hold a request each). A request
beyond either bound answers at once instead of waiting (its `Prefer: wait` is not applied; a
stream sends the job's state and ends, and its client reconnects later). A process that is
stopping holds nothing at all (api/shutdown.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from django.conf import settings

from factorize_app.api.shutdown import draining


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
