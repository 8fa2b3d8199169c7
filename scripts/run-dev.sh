#!/usr/bin/env bash
# `make run`: the production web server on http://localhost:$PORT plus one warm worker for
# every queue, in the foreground; Ctrl-C stops both. Expects the virtualenv first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

python manage.py rqworker &
worker=$!
trap 'kill -TERM "$worker" 2>/dev/null || true; wait "$worker" 2>/dev/null || true' EXIT

echo "Serving on http://localhost:${PORT:-8123} (Ctrl-C stops the server and the worker)"
scripts/start-web.sh
