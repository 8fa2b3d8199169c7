"""gunicorn settings, shared by `make serve`, `make run`, the tests and the Docker image.

Threads (gthread) rather than processes carry the concurrent pollers: a poll spends most of
its time waiting on Redis, so a few processes with many threads each serve hundreds of them.
"""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "16"))
timeout = int(os.environ.get("WEB_TIMEOUT", "120"))
graceful_timeout = 30
keepalive = 5
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
