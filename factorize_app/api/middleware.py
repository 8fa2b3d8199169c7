import redis

from factorize_app.api.exceptions import outage_response
from factorize_app.jobs import QueueUnavailable


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
