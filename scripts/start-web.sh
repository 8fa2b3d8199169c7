#!/bin/sh
# Start the web server as in production (the Docker image's CMD and `make serve`): apply
# migrations, create the admin login if one is configured, then exec gunicorn so that it
# receives the container's signals directly.
set -eu
cd "$(dirname "$0")/.."
python manage.py migrate --noinput -v0
python manage.py ensure_superuser
exec gunicorn -c project/gunicorn_conf.py project.wsgi
