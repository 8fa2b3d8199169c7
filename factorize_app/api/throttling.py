"""Per-client request rates: DRF's throttle interface and rate syntax, counted in Redis.

DRF's own SimpleRateThrottle keeps a list of request times per client in the cache and writes it
back after reading it, so concurrent requests across processes overwrite each other's counts;
here the job service counts atomically (a fixed window), and the lean lane counts in the same
round trip as its poll.
"""

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from factorize_app import jobs
from factorize_app.api.identity.authentication import client_identity, identify

SUBMIT, POLL = "submit", "poll"
_SETTINGS = {SUBMIT: "THROTTLE_SUBMIT", POLL: "THROTTLE_POLL"}


def rate_limit(scope: str, meta, *, client: str | None = None) -> jobs.RateLimit | None:
    """The allowance in `scope` of the client behind `meta` (a WSGI environ or request.META),
    counted per identity (its API key, else its address), or of `client` (an identity's name)."""
    rate = getattr(settings, _SETTINGS[scope])
    if not rate or settings.EXECUTION_MODE == "sync":
        return None
    limit, window = SimpleRateThrottle.parse_rate(None, rate)
    return jobs.RateLimit(scope=scope, client=client or identify(meta).name, limit=limit, window=window)


def scope_of(method: str) -> str:
    """POSTs (submits, which are also the seed's polls) and DELETEs count as submits; reads as polls."""
    return SUBMIT if method in ("POST", "DELETE") else POLL


class ClientRateThrottle(SimpleRateThrottle):
    """Throttles a request by its method's scope; 429 with Retry-After when the allowance is spent."""

    def __init__(self) -> None:  # the rate is read per request, from our own settings
        self.retry_after: int | None = None

    def allow_request(self, request, view) -> bool:
        limit = rate_limit(scope_of(request.method), request.META, client=client_identity(request).name)
        if limit is None:
            return True
        try:
            jobs.count_request(rate_limit=limit)
        except jobs.Throttled as exc:
            self.retry_after = exc.retry_after
            return False
        except jobs.QueueUnavailable:
            return True  # fail open: the view answers 400 for bad input, else its own 503
        return True

    def wait(self) -> int | None:
        return self.retry_after
