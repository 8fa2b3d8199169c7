"""Create the admin login from DJANGO_SUPERUSER_USERNAME/PASSWORD, once; do nothing without them."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a superuser from DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD if both are set."

    def handle(self, *args, **options):
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        if not (username and password):
            self.stdout.write("No DJANGO_SUPERUSER_USERNAME/PASSWORD set: no admin login created.")
            return
        users = get_user_model()
        if users.objects.filter(username=username).exists():
            self.stdout.write(f"Admin login {username!r} already exists; left as it is.")
            return
        users.objects.create_superuser(username, os.environ.get("DJANGO_SUPERUSER_EMAIL", ""), password)
        self.stdout.write(f"Created admin login {username!r}.")
