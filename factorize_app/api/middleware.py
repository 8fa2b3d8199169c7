import sys

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent

from factorize_app.api.exceptions import bad_request, outage_response, too_large_response
from factorize_app.jobs import queue_error
from factorize_app.tasks.fields import parse_digits


def declared_length(meta) -> int | None:
    """The request's Content-Length, parsed with a bound (a 5,000-digit header is simply too
    large, not a ValueError); None when absent or not a number."""
    raw = (meta.get("CONTENT_LENGTH") or "").strip()
    if not (raw.isascii() and raw.isdigit()):
        return None
    length = parse_digits(raw, max_digits=18)
    return sys.maxsize if length is None else length


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
        if limit is not None and length is not None and length > limit:
            return too_large_response()
        return self.get_response(request)

    def process_exception(self, request, exception):
        # A plain Django view read an oversized body, or one with too many fields: JSON, as the API.
        if isinstance(exception, (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)):
            return bad_request(request, exception)
        return None


class RedisUnavailableMiddleware:
    """Turn a Redis outage or write refusal in any view (the django-rq dashboard too) into a 503
    JSON answer."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        error = queue_error(exception)
        return outage_response(error) if error is not None else None
