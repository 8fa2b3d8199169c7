"""RQ's own baseline: the same trivial job for a plain `rq worker -w rq.worker.SimpleWorker`."""

import os

import redis

_redis = redis.Redis.from_url(os.environ["REDIS_URL"])


def incr() -> int:
    return _redis.incr("bench:counter")
