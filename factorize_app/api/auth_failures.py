"""Failed authentications counted per client address, so that made-up API keys cannot buy a
database lookup each: 300 random keys once cost 300 queries and got 300 401s."""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

CACHE_ENTRIES = 10_000  # addresses tracked: a bound on memory whatever clients send


class FailedAuthentications:
    """Failed authentications per address and fixed window (THROTTLE_AUTH_FAILURES, DRF's rate
    syntax), counted in this process: past the limit, an address's unverified keys are refused
    (429) without a database lookup until the window ends. An IPv6 client counts by its /64 (one
    host holds a whole /64), so fresh addresses buy no fresh lookups. At most CACHE_ENTRIES
    addresses are tracked (the least recently failing are forgotten first)."""

    def __init__(self, *, max_entries: int = CACHE_ENTRIES) -> None:
        self.max_entries = max_entries
        self._counts: OrderedDict[str, tuple[int, int]] = OrderedDict()  # address -> (window number, failures)
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try a key again, or None if it may now."""
        rate = _failure_rate()
        if rate is None:
            return None
        limit, window = rate
        now = time.time()
        slot = now // window
        with self._lock:
            counted = self._counts.get(_address_group(address))
        if counted is None or counted[0] != slot or counted[1] < limit:
            return None
        return max(1, math.ceil((slot + 1) * window - now))

    def count(self, address: str) -> None:
        rate = _failure_rate()
        if rate is None:
            return
        slot = time.time() // rate[1]
        group = _address_group(address)
        with self._lock:
            counted = self._counts.get(group)
            failures = counted[1] + 1 if counted is not None and counted[0] == slot else 1
            self._counts[group] = (slot, failures)
            self._counts.move_to_end(group)
            while len(self._counts) > self.max_entries:
                self._counts.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()


def _failure_rate() -> tuple[int, int] | None:
    rate = settings.THROTTLE_AUTH_FAILURES
    if not rate:
        return None
    return SimpleRateThrottle.parse_rate(None, rate)


def _address_group(address: str) -> str:
    """An IPv4 address itself, an IPv6 address's /64 (IPv4-mapped ones as IPv4)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return address
