import os
import sys

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

try:
    django_application = get_wsgi_application()
except ImproperlyConfigured as refused:
    # One line naming what to set, not a traceback (scripts/serve.sh refuses before the server
    # starts; this covers a server started some other way).
    print(f"error: ImproperlyConfigured: {refused}", file=sys.stderr, flush=True)
    raise SystemExit(1) from None

# A stop signal answers the held requests at once (rolling upgrades lose nothing; api/shutdown.py).
from factorize_app.api import shutdown  # noqa: E402

shutdown.install()

# The hot poll paths skip Django's request cycle (factorize_app/api/lean.py); the rest is Django.
from factorize_app.api.lean import LeanPollApp  # noqa: E402

application = LeanPollApp(django_application)
