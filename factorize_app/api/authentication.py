"""Who a request is, verified: an API key (`Authorization: Bearer <key>`), a logged-in Django user
(the browsable API's session), or else an anonymous client known by its address.

A key a client presents is checked in every mode: an unknown, malformed or revoked key is a 401,
never an anonymous request, so no client can invent an identity (or a fresh one per request).
Key lookups are cached in process for API_KEY_CACHE_SECONDS (a revocation takes effect within
that), failed ones too, so neither a valid nor a bogus key costs a database query per request;
uses are counted in memory and written at most every API_KEY_USE_FLUSH_SECONDS per key and process.
Failed authentications are counted per address: past THROTTLE_AUTH_FAILURES, an address's keys
are answered 429 without a lookup (random keys would otherwise cost one query each).

`identify(meta)` works on a WSGI environ and on request.META alike (the lean lane has no
request object); it remembers its answer in `meta`, so a request is identified, and its key's
use counted, once however many callers ask.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError, close_old_connections, connection
from django.db.models import F
from django.http import JsonResponse
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.exceptions import APIException, AuthenticationFailed, Throttled
from rest_framework.permissions import BasePermission

from factorize_app.api.auth_failures import FailedAuthentications
from factorize_app.api.clients import client_address
from factorize_app.models import KEY_PATTERN, MAX_KEY_LENGTH, ApiKey, key_digest

logger = logging.getLogger("factorize_app.api")

IDENTITY_KEY = "factorize_app.identity"  # where identify() leaves its answer in the environ
_SCHEMES = ("bearer", "token")
CACHE_ENTRIES = 10_000  # per cache (valid keys, refused keys): a bound on memory whatever clients send
WWW_AUTHENTICATE = "Bearer"


class InvalidApiKey(Exception):
    """A request presented a key that is malformed, unknown or revoked."""


class TooManyFailedAuthentications(InvalidApiKey):
    """The request's address failed to authenticate THROTTLE_AUTH_FAILURES times in the current
    window: its key is not looked up (429, `retry_after` seconds)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed authentications from this address; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class ClientIdentity:
    """A client as the job service counts it: `name` keys fair order, rate limits and caps."""

    name: str
    key_id: int | None = None
    staff: bool = False
    max_queued: int | None = None  # a key's own caps; None: the settings' per-client defaults
    max_running: int | None = None
    max_redis_bytes: int | None = None


def identify(meta) -> ClientIdentity:
    """The identity behind a WSGI environ or request.META: its key's, else anonymous by address.

    Raises InvalidApiKey for a bearer key that is not a valid one. Session users are known only
    to client_identity(request) (a session needs Django's request cycle)."""
    identity = meta.get(IDENTITY_KEY)
    if identity is not None:
        return identity
    key = presented_key(meta)
    if key is None:
        identity = ClientIdentity(name="address-" + client_address(meta))
    else:
        identity = key_identity(key, address=client_address(meta))
        USES.count(identity.key_id)
    meta[IDENTITY_KEY] = identity
    return identity


def cached_identity(environ) -> ClientIdentity | None:
    """What identify(environ) answers, when that needs no database and cannot be a 401 (the lean
    lane's question); None when only DRF can answer: a key this process has not verified within
    API_KEY_CACHE_SECONDS, a bad key, or no key while REQUIRE_API_KEY is on. Never raises."""
    identity = environ.get(IDENTITY_KEY)
    if identity is not None:
        return identity
    key = presented_key(environ)
    if key is None:
        if settings.REQUIRE_API_KEY:
            return None
        identity = ClientIdentity(name="address-" + client_address(environ))
    else:
        if settings.API_KEY_CACHE_SECONDS <= 0 or len(key) > MAX_KEY_LENGTH:
            return None
        identity = _VALID_KEYS.get(key_digest(key), time.monotonic())
        if identity is None:
            return None
        USES.count(identity.key_id)
    environ[IDENTITY_KEY] = identity
    return identity


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


FAILURES = FailedAuthentications()


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


def client_identity(request) -> ClientIdentity:
    """The identity of a DRF (or plain Django) request: its key's, its logged-in user's
    (`user-<pk>`), else anonymous by address. Remembered in request.META, so client_name(meta)
    agrees with it once it has run (DRF's throttle asks it before any view does)."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, ClientIdentity):
        return auth
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        identity = ClientIdentity(name=f"user-{user.pk}", staff=user.is_staff)
        request.META[IDENTITY_KEY] = identity
        return identity
    return identify(request.META)


class KeyStoreUnavailable(APIException):
    """The database behind API keys and sessions did not answer: an outage (503), not a bug."""

    status_code = 503
    default_detail = "The key store (the database) is unavailable; try again shortly."
    default_code = "unavailable"


class ApiKeyAuthentication(BaseAuthentication):
    """DRF authentication by API key: (AnonymousUser, ClientIdentity) for a valid key, None
    without one (session authentication may still log the request in), 401 for a bad one."""

    def authenticate(self, request):
        try:
            identity = identify(request.META)
        except TooManyFailedAuthentications as exc:
            raise Throttled(wait=exc.retry_after, detail=f"Request was throttled: {exc}.") from None
        except InvalidApiKey as exc:
            raise AuthenticationFailed(str(exc)) from None
        except DatabaseError as exc:
            raise KeyStoreUnavailable() from exc
        if identity.key_id is None:
            return None
        return AnonymousUser(), identity

    def authenticate_header(self, request) -> str:
        return WWW_AUTHENTICATE  # so that DRF answers 401 (with this challenge), not 403


class SessionCookieAuthentication(SessionAuthentication):
    """DRF's session authentication (CSRF-checked), skipped for a request without a session
    cookie: it has no session, and not reading one keeps its answer free of `Vary: Cookie`,
    as the lean lane answers the same request."""

    def authenticate(self, request):
        if settings.SESSION_COOKIE_NAME not in request.COOKIES:
            return None
        try:
            return super().authenticate(request)
        except DatabaseError as exc:
            raise KeyStoreUnavailable() from exc


class ApiKeyRequired(BasePermission):
    """With REQUIRE_API_KEY, every API request needs a valid key or a logged-in user; DRF then
    answers others 401 with `WWW-Authenticate: Bearer`."""

    def has_permission(self, request, view) -> bool:
        if not settings.REQUIRE_API_KEY:
            return True
        return isinstance(request.auth, ClientIdentity) or bool(request.user and request.user.is_authenticated)


def key_or_staff_refusal(request) -> JsonResponse | None:
    """For a plain Django view (/metrics): None for a valid key or a staff session, else the 401."""
    try:
        identity = identify(request.META)
    except TooManyFailedAuthentications as exc:
        response = JsonResponse({"detail": f"Request was throttled: {exc}."}, status=429)
        response["Retry-After"] = str(exc.retry_after)
        return response
    except InvalidApiKey as exc:
        return _unauthorized(str(exc))
    if identity.key_id is not None or (request.user.is_authenticated and request.user.is_staff):
        return None
    return _unauthorized("An API key is required: send Authorization: Bearer <key>.")


def _unauthorized(detail: str) -> JsonResponse:
    response = JsonResponse({"detail": detail}, status=401)
    response["WWW-Authenticate"] = WWW_AUTHENTICATE
    return response
