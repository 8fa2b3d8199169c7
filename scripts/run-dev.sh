#!/usr/bin/env bash
# `make run`: the web server on http://localhost:$PORT, one worker per model (each in its own
# process, and its own environment when its requirements conflict), and the webhooks worker,
# supervised by `manage.py devserver`: restarted with back-off when they exit, and when their
# code changes (RELOAD=0: never). Ctrl-C stops them all. Expects the virtualenv first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${RELOAD:-1}" = 1 ]; then
    exec python manage.py devserver
fi
exec python manage.py devserver --no-reload
