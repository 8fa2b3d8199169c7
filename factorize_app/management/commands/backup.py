"""`manage.py backup DIR`: a consistent copy of the service's state while it runs.

The state is two stores: Redis (jobs, results, queues, the job id key) and the web's database
(admins, API keys). Redis is copied key by key under a write pause (jobs.backup); a SQLite
database with SQLite's online backup API, which copies one consistent snapshot while the web
keeps using it. `manage.py restore DIR` puts both back.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from factorize_app.jobs.backup import dump_redis

DATABASE_FILE = "database.sqlite3"
MANIFEST = "manifest.json"


def sqlite_path() -> Path:
    """The web's SQLite file; a CommandError for any other database (use its own tools)."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3":
        raise CommandError(
            f"the database is {database['ENGINE']}: back it up with its own tools (e.g. pg_dump); use --redis-only here"
        )
    return Path(database["NAME"])


class Command(BaseCommand):
    help = "Copy the service's Redis database and its web database (SQLite) into DIR, while it runs."

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path, help="Where to write the copy (created; must be empty).")
        parser.add_argument(
            "--redis-only", action="store_true", help="Copy Redis only (another database has its own tools)."
        )

    def handle(self, *args, directory: Path, redis_only: bool, **options):
        directory.mkdir(parents=True, exist_ok=True)
        if any(directory.iterdir()):
            raise CommandError(f"{directory} is not empty")
        started = time.monotonic()
        manifest = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if not redis_only:
            source = sqlite3.connect(sqlite_path())
            target = sqlite3.connect(directory / DATABASE_FILE)
            with target:
                source.backup(target)
            source.close()
            target.close()
            manifest["database"] = DATABASE_FILE
        manifest["redis_keys"] = dump_redis(directory)
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        self.stderr.write(
            f"backed up {manifest['redis_keys']} Redis keys"
            + ("" if redis_only else " and the database")
            + f" to {directory} in {time.monotonic() - started:.1f} s"
        )
