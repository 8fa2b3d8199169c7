"""Celery peer: the trivial job with a Redis broker and Redis results."""

import os

import redis
from celery import Celery

URL = os.environ["REDIS_URL"]
app = Celery("bench", broker=URL, backend=URL)
app.conf.update(worker_hijack_root_logger=False, worker_prefetch_multiplier=16, task_acks_late=False)
_redis = redis.Redis.from_url(URL)


@app.task
def incr() -> int:
    return _redis.incr("bench:counter")
