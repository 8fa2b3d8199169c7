"""A request's identity, verified: an API key (identity.api_keys), a logged-in Django user (the
browsable API's session), or else an anonymous client known by its address; DRF's authentication
and permission classes, and the same answer for the lean lane and plain Django views.

`identify(meta)` works on a WSGI environ and on request.META alike (the lean lane has no
request object); it remembers its answer in `meta`, so a request is identified, and its key's
use counted, once however many callers ask.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError
from django.http import JsonResponse
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.exceptions import APIException, AuthenticationFailed, Throttled
from rest_framework.permissions import BasePermission

from factorize_app.api.identity import api_keys
from factorize_app.api.identity.api_keys import InvalidApiKey, TooManyFailedAuthentications
from factorize_app.api.identity.clients import ClientIdentity, anonymous, client_address

IDENTITY_KEY = "factorize_app.identity"  # where identify() leaves its answer in the environ
WWW_AUTHENTICATE = "Bearer"


def identify(meta) -> ClientIdentity:
    """The identity behind a WSGI environ or request.META: its key's, else anonymous by address.

    Raises InvalidApiKey for a bearer key that is not a valid one. Session users are known only
    to client_identity(request) (a session needs Django's request cycle)."""
    identity = meta.get(IDENTITY_KEY)
    if identity is not None:
        return identity
    key = api_keys.presented_key(meta)
    if key is None:
        identity = anonymous(meta)
    else:
        identity = api_keys.key_identity(key, address=client_address(meta))
        api_keys.USES.count(identity.key_id)
    meta[IDENTITY_KEY] = identity
    return identity


def cached_identity(environ) -> ClientIdentity | None:
    """What identify(environ) answers, when that needs no database and cannot be a 401 (the lean
    lane's question); None when only DRF can answer: a key this process has not verified within
    API_KEY_CACHE_SECONDS, a bad key, or no key while REQUIRE_API_KEY is on. Never raises."""
    identity = environ.get(IDENTITY_KEY)
    if identity is not None:
        return identity
    key = api_keys.presented_key(environ)
    if key is None:
        if settings.REQUIRE_API_KEY:
            return None
        identity = anonymous(environ)
    else:
        identity = api_keys.cached_key_identity(key)
        if identity is None:
            return None
    environ[IDENTITY_KEY] = identity
    return identity


def client_name(meta) -> str:
    """A client for fair queueing and limits: its verified identity's name (`key-<pk>` for an API
    key, else `address-<ip>`). Raises InvalidApiKey for a bad key (DRF's authentication has
    refused such requests before any view runs)."""
    return identify(meta).name


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

