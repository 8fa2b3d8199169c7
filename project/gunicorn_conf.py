"""gunicorn settings, for WEB_SERVER=gunicorn (scripts/serve.sh; granian is the default server).

Threads (gthread) rather than processes carry the concurrent pollers: a poll spends most of
its time waiting on Redis, so a few processes with many threads each serve hundreds of them.
"""

import os

from project.environment import env
from project.log_format import logging_config

bind = f"{env.HOST}:{env.PORT}"
workers = env.WEB_CONCURRENCY
worker_class = "gthread"
threads = env.WEB_THREADS
timeout = env.WEB_TIMEOUT
graceful_timeout = 30
keepalive = 5
access_log = env.ACCESS_LOG == "1"
accesslog = "-" if access_log else None
errorlog = "-"
loglevel = env.LOG_LEVEL.lower()
# gunicorn's own lines in the service's format (LOG_FORMAT), through the same configuration.
logconfig_dict = logging_config(env.LOG_FORMAT, loglevel, access_log=access_log)


def on_starting(server):
    """Request metrics from every worker process are merged through files in one directory."""
    import shutil
    import tempfile

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="factorize-metrics-")
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
