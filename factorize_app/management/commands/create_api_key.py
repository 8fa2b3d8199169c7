"""Create an API key and print it, once: only the key on stdout, so a script can capture it.

KEY=$(python manage.py create_api_key "reporting team" --max-queued 500)
"""

from django.core.management.base import BaseCommand

from factorize_app.models import ApiKey


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


class Command(BaseCommand):
    help = "Create an API key named NAME and print it (it is stored only hashed: this is the one time it is shown)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="Who holds the key, e.g. a team or a service.")
        parser.add_argument("--max-queued", type=non_negative, help="This key's cap on queued jobs.")
        parser.add_argument("--max-running", type=non_negative, help="This key's cap on running jobs.")
        parser.add_argument(
            "--max-redis-bytes", type=non_negative, help="This key's budget of Redis memory for its jobs, in bytes."
        )

    def handle(self, *args, **options):
        api_key, plaintext = ApiKey.create_key(
            name=options["name"],
            max_queued=options["max_queued"],
            max_running=options["max_running"],
            max_redis_bytes=options["max_redis_bytes"],
        )
        self.stderr.write(f"created API key {api_key.name!r} (prefix {api_key.prefix}); it is shown only this once:")
        self.stdout.write(plaintext)
