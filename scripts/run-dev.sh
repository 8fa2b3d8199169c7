#!/usr/bin/env bash
# `make run`: the production web server on http://localhost:$PORT plus one warm worker for
# every queue, in the foreground; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${VENV:-.venv}/bin"

"$bin/python" manage.py rqworker &
worker=$!
trap 'kill -TERM "$worker" 2>/dev/null || true; wait "$worker" 2>/dev/null || true' EXIT

echo "Serving on http://localhost:${PORT:-8123} (Ctrl-C stops the server and the worker)"
HOST="${HOST:-127.0.0.1}" PORT="${PORT:-8123}" "$bin/gunicorn" -c project/gunicorn_conf.py project.wsgi
