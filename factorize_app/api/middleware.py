import redis
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent

from factorize_app.api.exceptions import bad_request, outage_response, too_large_response
from factorize_app.jobs import QueueUnavailable


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
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if limit is not None and length > limit:
            return too_large_response()
        return self.get_response(request)

    def process_exception(self, request, exception):
        # A plain Django view read an oversized body, or one with too many fields: JSON, as the API.
        if isinstance(exception, (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)):
            return bad_request(request, exception)
        return None


class RedisUnavailableMiddleware:
    """Turn a Redis outage in any view (the django-rq dashboard too) into a 503 JSON answer."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, (QueueUnavailable, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            return outage_response(exception)
        return None
