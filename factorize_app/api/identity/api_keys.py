"""API keys (`Authorization: Bearer <key>`), verified without costing a query per request.

A key a client presents is checked in every mode: an unknown, malformed or revoked key is refused
(InvalidApiKey: a 401), never taken for an anonymous request, so no client can invent an identity
(or a fresh one per request). Key lookups are cached in process for API_KEY_CACHE_SECONDS (a
revocation takes effect within that), failed ones too, so neither a valid nor a bogus key costs a
database query per request; uses are counted in memory and written at most every
API_KEY_USE_FLUSH_SECONDS per key and process. Failed authentications are counted per address:
past THROTTLE_AUTH_FAILURES, an address's keys are answered 429 without a lookup (300 random keys
once cost 300 queries and got 300 401s).
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.db.models import F
from rest_framework.throttling import SimpleRateThrottle

from factorize_app.api.identity.clients import ClientIdentity
from factorize_app.models import KEY_PATTERN, MAX_KEY_LENGTH, ApiKey, key_digest

logger = logging.getLogger("factorize_app.api")

_SCHEMES = ("bearer", "token")
# Per cache (valid keys, refused keys, failing addresses): a bound on memory whatever clients send.
CACHE_ENTRIES = 10_000


class InvalidApiKey(Exception):
    """A request presented a key that is malformed, unknown or revoked."""


class TooManyFailedAuthentications(InvalidApiKey):
    """The request's address failed to authenticate THROTTLE_AUTH_FAILURES times in the current
    window: its key is not looked up (429, `retry_after` seconds)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed authentications from this address; retry in {retry_after} s")
        self.retry_after = retry_after


def presented_key(meta) -> str | None:
    """The key in `Authorization: Bearer <key>` (or `Token <key>`); None without one.

    Another scheme (Basic, from a password-protecting proxy in front) is not ours: no key. An
    empty header is a bad key, not none: the web server empties a value it cannot decode."""
    authorization = meta.get("HTTP_AUTHORIZATION")
    if authorization is None:
        return None
    authorization = authorization.strip()
    if not authorization:
        return ""
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() not in _SCHEMES:
        return None
    return credentials.strip()


def key_identity(key: str, *, address: str = "") -> ClientIdentity:
    """The identity of a valid key; InvalidApiKey otherwise (a malformed one costs no lookup).
    Each failure counts against `address` (the client's); past THROTTLE_AUTH_FAILURES in the
    window, any key this process has not verified is TooManyFailedAuthentications, unlooked-up."""
    ttl = settings.API_KEY_CACHE_SECONDS
    now = time.monotonic()
    digest = key_digest(key) if len(key) <= MAX_KEY_LENGTH else ""
    if ttl > 0 and digest:
        identity = _VALID_KEYS.get(digest, now)
        if identity is not None:
            return identity
    retry_after = FAILURES.retry_after(address)
    if retry_after is not None:
        raise TooManyFailedAuthentications(retry_after)
    try:
        return _verify(key, digest, ttl, now)
    except InvalidApiKey:
        FAILURES.count(address)
        raise


def _verify(key: str, digest: str, ttl: float, now: float) -> ClientIdentity:
    if not digest or not KEY_PATTERN.fullmatch(key):
        raise InvalidApiKey("Invalid API key.")
    if ttl > 0:
        refusal = _REFUSED_KEYS.get(digest, now)
        if refusal is not None:
            raise InvalidApiKey(refusal)
    identity, refusal = _look_up(digest)
    if ttl > 0:
        if identity is not None:
            _VALID_KEYS.put(digest, identity, now + ttl)
        else:
            _REFUSED_KEYS.put(digest, refusal, now + ttl)
    if identity is None:
        raise InvalidApiKey(refusal)
    return identity


def _look_up(digest: str) -> tuple[ClientIdentity | None, str]:
    api_key = (
        ApiKey.objects.filter(digest=digest)
        .only("pk", "revoked_at", "max_queued", "max_running", "max_redis_bytes")
        .first()
    )
    if api_key is None:
        return None, "Invalid API key."
    if api_key.revoked_at is not None:
        return None, "The API key has been revoked."
    identity = ClientIdentity(
        name=f"key-{api_key.pk}",
        key_id=api_key.pk,
        max_queued=api_key.max_queued,
        max_running=api_key.max_running,
        max_redis_bytes=api_key.max_redis_bytes,
    )
    return identity, ""


def cached_key_identity(key: str) -> ClientIdentity | None:
    """The identity of a key this process verified within API_KEY_CACHE_SECONDS (its use
    counted); None for any other key (unverified, bad, or caching off). Never a lookup."""
    if settings.API_KEY_CACHE_SECONDS <= 0 or len(key) > MAX_KEY_LENGTH:
        return None
    identity = _VALID_KEYS.get(key_digest(key), time.monotonic())
    if identity is not None:
        USES.count(identity.key_id)
    return identity


class ExpiringCache:
    """A bounded, thread-safe map whose entries expire: least recently used entries go first."""

    def __init__(self, *, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, now: float):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= now:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: str, value: object, expires: float) -> None:
        with self._lock:
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def discard(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_VALID_KEYS = ExpiringCache(max_entries=CACHE_ENTRIES)
_REFUSED_KEYS = ExpiringCache(max_entries=CACHE_ENTRIES)


def forget_key(digest: str) -> None:
    """Drop a key from this process's caches (a revocation here takes effect at once; elsewhere
    within API_KEY_CACHE_SECONDS)."""
    _VALID_KEYS.discard(digest)
    _REFUSED_KEYS.discard(digest)


class UseCounter:
    """Uses per key, counted in memory and added to the database by a background thread every
    API_KEY_USE_FLUSH_SECONDS: a request never waits for a database write."""

    def __init__(self, *, background: bool = True) -> None:
        self._pending: dict[int, tuple[int, float]] = {}  # key id -> (uses, time of the last one)
        self._lock = threading.Lock()
        self.background = background  # False: only flush() writes (tests)
        self._flusher_pid: int | None = None  # the process whose thread flushes (none after a fork)

    def count(self, key_id: int) -> None:
        with self._lock:
            uses, _ = self._pending.get(key_id, (0, 0.0))
            self._pending[key_id] = (uses + 1, time.time())
            if self.background and self._flusher_pid != os.getpid():
                self._flusher_pid = os.getpid()
                threading.Thread(target=self._flush_forever, name="api-key-uses", daemon=True).start()
                atexit.register(self.flush)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(settings.API_KEY_USE_FLUSH_SECONDS)
            try:
                self.flush()
                connection.close()  # this thread's own connection; a fresh one next time
            except Exception:  # the counting thread must outlive any one failure
                logger.warning("could not record API key uses; retrying later", exc_info=True)

    def flush(self) -> None:
        """Add the pending uses to the keys' rows; on a database error, keep them for next time."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        close_old_connections()
        for key_id, (uses, last_used) in pending.items():
            try:
                ApiKey.objects.filter(pk=key_id).update(
                    use_count=F("use_count") + uses, last_used_at=datetime.fromtimestamp(last_used, UTC)
                )
            except DatabaseError:
                logger.warning("could not record the uses of API key %s; retrying later", key_id, exc_info=True)
                with self._lock:
                    more, latest = self._pending.get(key_id, (0, 0.0))
                    self._pending[key_id] = (uses + more, max(last_used, latest))


USES = UseCounter()


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


FAILURES = FailedAuthentications()
