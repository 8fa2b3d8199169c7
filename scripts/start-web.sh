#!/bin/sh
# Start the web server as in production (the Docker image's CMD and `make serve`): apply
# migrations, create the admin login if one is configured, then exec the server (scripts/serve.sh)
# so that it receives the container's signals directly.
set -eu
cd "$(dirname "$0")/.."
# Replicas sharing the data volume (deploy/compose/proxy.yml) migrate one at a time: two at once
# could both apply the same migration.
if [ -d /data ] && [ -w /data ] && command -v flock >/dev/null 2>&1; then
    flock /data/.migrate.lock python manage.py migrate --noinput -v0
else
    python manage.py migrate --noinput -v0
fi
python manage.py ensure_superuser
exec scripts/serve.sh
