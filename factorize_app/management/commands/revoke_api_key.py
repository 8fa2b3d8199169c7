"""Revoke an API key by its prefix (the 8 characters after `fzk_`, shown in the admin):

python manage.py revoke_api_key 1a2b3c4d
"""

from django.core.management.base import BaseCommand, CommandError

from factorize_app.models import KEY_SCHEME, ApiKey


class Command(BaseCommand):
    help = "Revoke the API key with this prefix; web processes refuse it within API_KEY_CACHE_SECONDS."

    def add_arguments(self, parser):
        parser.add_argument("prefix", help="The key's prefix (a whole key is accepted too).")

    def handle(self, *args, **options):
        prefix = options["prefix"].strip()
        if prefix.startswith(f"{KEY_SCHEME}_"):  # a whole key, or `fzk_<prefix>_…` as the admin shows it
            prefix = prefix.split("_")[1]
        try:
            api_key = ApiKey.revoke(prefix=prefix)
        except ApiKey.DoesNotExist:
            raise CommandError(f"no API key has the prefix {prefix!r}") from None
        self.stdout.write(
            f"revoked API key {api_key.name!r} (prefix {api_key.prefix}) at {api_key.revoked_at:%Y-%m-%d %H:%M:%S} UTC"
        )
