#!/bin/sh
# Start the web server as in production (the Docker image's CMD and `make serve`): apply
# migrations, create the admin login if one is configured, then exec the server (scripts/serve.sh)
# so that it receives the container's signals directly.
set -eu
cd "$(dirname "$0")/.."
python manage.py migrate --noinput -v0
python manage.py ensure_superuser
exec scripts/serve.sh
