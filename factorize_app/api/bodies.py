"""Request bodies, bounded: in size (413 before anything reads them) and in memory across a web
process (a budget for the large ones being parsed at once); api/parsers.py bounds what parsing
makes of them (nesting depth, each form field once).

The budget: a 1 MB batch of 1,000 items costs a process 12-15 MB while it is parsed, validated and
answered (dicts, strings, each item's validated copy and its answer). Forty at once grew a web
process from 132 to 440 MB, and it stayed there: freed memory stays with the allocator. So a body
above LARGE_BODY_BYTES takes its declared length from a process-wide BODY_MEMORY_BUDGET before
anything reads it, and gives it back when its response is ready; a body that does not fit while
others hold the budget is answered 503 at once, with Retry-After, naming the budget, before its
first byte is read (a body longer than the whole budget takes all of it: it is read alone).
Smaller bodies, every poll and every single submit, never ask: the lean lane reads them (up to
64 KB) and this bounds only what it leaves to Django. When the last large body of a burst is done,
freed heap memory is handed back to the system (glibc's malloc_trim), so the process's size
returns near where it was.

A view that streams its body in bounded pieces (`streamed_body`: uploads, POST /files) is left
alone by both: it holds no body in memory and checks the length against its own limit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys
import threading

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import JsonResponse
from django.urls import Resolver404, resolve

from factorize_app.api.exceptions import bad_request, too_large_response
from factorize_app.tasks.fields import parse_digits

logger = logging.getLogger("factorize_app.api")

RETRY_AFTER = "1"  # a large body's request takes about a second: room comes back that soon


# --- size: the declared length ------------------------------------------------------------


def declared_length(meta) -> int | None:
    """The request's Content-Length, parsed with a bound (a 5,000-digit header is simply too
    large, not a ValueError); None when absent or not a number."""
    raw = (meta.get("CONTENT_LENGTH") or "").strip()
    if not (raw.isascii() and raw.isdigit()):
        return None
    length = parse_digits(raw, max_digits=18)
    return sys.maxsize if length is None else length


def streamed_body(view):
    """Mark a view that reads its body in bounded pieces and bounds its length itself: the body
    limits of this module leave its requests alone."""
    view.streams_request_body = True
    return view


def streams_body(request) -> bool:
    """Whether the request's view streams its body (resolved once, and only for bodies over a limit)."""
    known = getattr(request, "_streams_body", None)
    if known is None:
        try:
            match = resolve(request.path_info, getattr(request, "urlconf", None))
        except Resolver404:
            match = None
        known = request._streams_body = bool(getattr(match and match.func, "streams_request_body", False))
    return known


class RequestBodyLimitMiddleware:
    """Answer 413 JSON to a body over MAX_REQUEST_BYTES before anything reads it.

    Django checks DATA_UPLOAD_MAX_MEMORY_SIZE only when a body is read (request.body, request.POST),
    turns the error into a 400 HTML page, and streams multipart files to disk whatever their size;
    checking the declared length first bounds every view, DRF's or not. (A WSGI body never holds
    more than its CONTENT_LENGTH: Django reads through a stream limited to it.)
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        length = declared_length(request.META)
        if limit is not None and length is not None and length > limit and not streams_body(request):
            return too_large_response()
        return self.get_response(request)

    def process_exception(self, request, exception):
        # A plain Django view read an oversized body, or one with too many fields: JSON, as the API.
        if isinstance(exception, (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)):
            return bad_request(request, exception)
        return None


# --- memory: the large bodies a process holds at once -------------------------------------


class BodyBudget:
    """Bytes of large bodies this process is reading and parsing, against a budget."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.held = 0

    def take(self, length: int, budget: int) -> int | None:
        """Take `length` bytes (at most the whole budget); what was taken, or None if it does not fit."""
        share = min(length, budget)
        with self._lock:
            if self.held + share > budget:
                return None
            self.held += share
            return share

    def give_back(self, share: int) -> bool:
        """Return a share; whether the budget is now wholly free (the end of a burst)."""
        with self._lock:
            self.held -= share
            return self.held == 0


BODIES = BodyBudget()


class LargeBodyBudgetMiddleware:
    """Bound the large bodies a process holds at once (BODY_MEMORY_BUDGET, above LARGE_BODY_BYTES)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        budget = settings.BODY_MEMORY_BUDGET
        length = declared_length(request.META)
        if budget <= 0 or length is None or length <= settings.LARGE_BODY_BYTES or streams_body(request):
            return self.get_response(request)
        share = BODIES.take(length, budget)
        if share is None:
            return _refusal(budget)
        try:
            return self.get_response(request)
        finally:
            if BODIES.give_back(share):
                release_free_memory()


def _refusal(budget: int) -> JsonResponse:
    response = JsonResponse(
        {
            "detail": (
                f"This server is reading as many large request bodies as BODY_MEMORY_BUDGET allows "
                f"({budget} bytes at once, for bodies above {settings.LARGE_BODY_BYTES} bytes); "
                f"retry in {RETRY_AFTER} s, or send smaller batches."
            ),
            "reason": "BODY_MEMORY_BUDGET",
        },
        status=503,
    )
    response["Retry-After"] = RETRY_AFTER
    return response


def release_free_memory() -> None:
    """Hand the heap's free memory back to the system (glibc; elsewhere, nothing)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): no trim
        return None
