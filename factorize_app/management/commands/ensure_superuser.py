"""The admin login from DJANGO_SUPERUSER_USERNAME/PASSWORD: created once at the web server's start
(scripts/start-web.sh), and set or reset on request (--reset), with no prompt, inside a container:

    docker compose exec -e DJANGO_SUPERUSER_PASSWORD='new password' web python manage.py ensure_superuser --reset
    printf '%s' 'new password' | docker compose exec -T web python manage.py ensure_superuser --reset --password-stdin
"""

import logging
import os
import sys

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

# Log lines rather than command output: at the web server's start they join its other lines,
# in the same format (LOG_FORMAT).
logger = logging.getLogger("factorize_app.admin")


class Command(BaseCommand):
    help = (
        "Create a superuser from DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD if both are set and it "
        "does not exist yet; with --reset, set that login's password (creating it if missing)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Set the password of an existing login too (and make it an active superuser again).",
        )
        parser.add_argument("--username", help="The login (default: DJANGO_SUPERUSER_USERNAME).")
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="Read the password from standard input instead of DJANGO_SUPERUSER_PASSWORD.",
        )

    def handle(self, *args, **options):
        username = options["username"] or os.environ.get("DJANGO_SUPERUSER_USERNAME", "")
        if options["password_stdin"]:
            password = sys.stdin.read().rstrip("\r\n")
        else:
            password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        if not (username and password):
            if options["reset"]:
                raise CommandError(
                    "--reset needs a login and a password: DJANGO_SUPERUSER_USERNAME (or --username) and "
                    "DJANGO_SUPERUSER_PASSWORD (or --password-stdin)."
                )
            logger.info("no DJANGO_SUPERUSER_USERNAME/PASSWORD set: no admin login created")
            return
        users = get_user_model()
        user = users.objects.filter(username=username).first()
        if user is not None and not options["reset"]:
            logger.info(
                "admin login %r already exists; left as it is (its password is set once: "
                "`manage.py ensure_superuser --reset` sets it again)",
                username,
            )
            return
        if options["reset"]:
            try:
                validate_password(password, user)
            except ValidationError as invalid:
                raise CommandError("password refused: " + " ".join(invalid.messages)) from None
        if user is None:
            users.objects.create_superuser(username, os.environ.get("DJANGO_SUPERUSER_EMAIL", ""), password)
            logger.info("created admin login %r", username)
            return
        user.set_password(password)
        user.is_staff = user.is_superuser = user.is_active = True
        user.save()
        logger.info("password of admin login %r set", username)
