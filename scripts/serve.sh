#!/bin/sh
# The production web server, in the foreground: granian (default) or gunicorn (WEB_SERVER=gunicorn).
#
# Threads, not processes, carry concurrent requests: a poll spends its time waiting on Redis
# (and a `Prefer: wait` poll holds its thread while blocked in Redis, GIL released), so
# WEB_CONCURRENCY processes (default 2) with WEB_THREADS threads each (default 640: room for
# 1,000 event streams on a machine beside the polls) serve
# hundreds of waiting clients without starving other requests.
set -eu
cd "$(dirname "$0")/.."
: "${HOST:=0.0.0.0}" "${PORT:=8080}" "${WEB_CONCURRENCY:=2}" "${WEB_THREADS:=640}" "${ACCESS_LOG:=0}"
export HOST PORT WEB_CONCURRENCY WEB_THREADS ACCESS_LOG
# On SIGTERM (or SIGINT) the server stops accepting connections and each process answers the
# requests it holds (long polls, event streams) at once and exits (factorize_app/api/shutdown.py):
# a stop takes about a second. A worker that has not stopped WEB_KILL_TIMEOUT seconds after a stop
# signal is killed all the same (granian otherwise waits for it forever when a stop signal reaches
# its workers and master together).
# ACCESS_LOG=1: one log line per request (it costs about a third of the hot poll's throughput here;
# requests are counted per route and status in /metrics either way).
# The Rust side runs on granian's multi-threaded runtime (`--runtime-mode mt`, its default for
# WSGI), one runtime thread per process: the hot poll answered 3-38% more requests a second with it
# than with the single-threaded one in 5 of 6 paired runs here (a shared 2-core machine; server CPU
# per request the same within noise, 211-224 µs against 213-217).
access_log="--access-log"
[ "$ACCESS_LOG" = 1 ] || access_log="--no-access-log"
# Request metrics of all processes are merged through files in this directory.
if [ -z "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    PROMETHEUS_MULTIPROC_DIR="$(mktemp -d -t factorize-metrics-XXXXXX)"
    export PROMETHEUS_MULTIPROC_DIR
fi
# The servers load the logging configuration (project/log_format.py) before the application.
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH
# Refuse a bad configuration in one line, warn once about insecure defaults, and write granian's
# logging configuration: the same format (LOG_FORMAT) as every other line of the service.
log_config="$(mktemp -t factorize-log-config-XXXXXX.json)"
python scripts/web-preflight.py "$log_config" || exit 1
case "${WEB_SERVER:-granian}" in
    granian)
        exec granian --interface wsgi --host "$HOST" --port "$PORT" --workers "$WEB_CONCURRENCY" \
            --blocking-threads "$WEB_THREADS" --runtime-mode mt --respawn-failed-workers "$access_log" --no-ws \
            --log-config "$log_config" --log-level "$(echo "${LOG_LEVEL:-INFO}" | tr '[:upper:]' '[:lower:]')" \
            --workers-kill-timeout "${WEB_KILL_TIMEOUT:-10}" project.wsgi:application
        ;;
    gunicorn)
        exec gunicorn -c project/gunicorn_conf.py project.wsgi
        ;;
    *)
        echo "WEB_SERVER must be granian or gunicorn, not '${WEB_SERVER}'" >&2
        exit 2
        ;;
esac
