"""Dramatiq peer: the trivial job with a Redis broker and the Results middleware on Redis."""

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

URL = os.environ["REDIS_URL"]
broker = RedisBroker(url=URL)
broker.add_middleware(Results(backend=RedisBackend(url=URL)))
dramatiq.set_broker(broker)
_redis = redis.Redis.from_url(URL)


@dramatiq.actor(store_results=True, max_retries=0)
def incr() -> int:
    return _redis.incr("bench:counter")
