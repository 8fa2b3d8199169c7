import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

django_application = get_wsgi_application()

# The hot poll paths skip Django's request cycle (factorize_app/api/lean.py); the rest is Django.
from factorize_app.api.lean import LeanPollApp  # noqa: E402

application = LeanPollApp(django_application)
