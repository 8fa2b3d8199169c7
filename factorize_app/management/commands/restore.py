"""`manage.py restore DIR`: put back what `manage.py backup DIR` copied.

Into an empty Redis database (a fresh volume; `--replace` overwrites the keys of a non-empty one)
and the web's SQLite database (with SQLite's backup API, so a running web sees the restored one
at its next query). Restart the workers and the web afterwards, so that no process keeps what it
cached from the state before.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from factorize_app.jobs.backup import RestoreRefused, restore_redis
from factorize_app.management.commands.backup import MANIFEST, sqlite_path


class Command(BaseCommand):
    help = "Restore the service's Redis database and its web database (SQLite) from a `manage.py backup` DIR."

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path, help="A directory written by `manage.py backup`.")
        parser.add_argument("--replace", action="store_true", help="Restore into a Redis database that holds keys.")

    def handle(self, *args, directory: Path, replace: bool, **options):
        try:
            manifest = json.loads((directory / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise CommandError(f"{directory} holds no backup ({MANIFEST}: {exc})") from None
        try:
            keys = restore_redis(directory, replace=replace)
        except RestoreRefused as exc:
            raise CommandError(f"{exc}: restore into an empty one, or pass --replace") from None
        if manifest.get("database"):
            source = sqlite3.connect(directory / manifest["database"])
            target = sqlite3.connect(sqlite_path())
            with target:
                source.backup(target)
            source.close()
            target.close()
        database = " and the database" if manifest.get("database") else ""
        self.stderr.write(f"restored {keys} Redis keys{database} from {directory}")
