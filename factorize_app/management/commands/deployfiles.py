"""`make deploy-files`: the per-model Docker Compose and Kubernetes files, from the registry."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from factorize_app import deployfiles
from factorize_app.tasks import task_types


class Command(BaseCommand):
    help = (
        "Write each task type's worker service (deploy/compose/workers.yml) and its Kubernetes worker "
        "Deployment, KEDA ScaledObject and image (deploy/kubernetes/) from its declaration; with --check, "
        "write nothing and exit 1 naming the files that are out of date."
    )
    requires_system_checks: list[str] = []  # reads the registry and writes files: nothing else

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="Only report stale files (exit 1 if any).")
        parser.add_argument("--root", type=Path, default=Path(settings.BASE_DIR), help="The project directory.")

    def handle(self, *args, check: bool, root: Path, **options):
        try:
            if check:
                stale = deployfiles.stale(task_types(), root)
                if stale:
                    raise CommandError(
                        "out of date (run `make deploy-files` and commit the result): " + ", ".join(stale),
                        returncode=1,
                    )
                self.stdout.write("deployment files up to date")
                return
            changed = deployfiles.write(task_types(), root)
        except deployfiles.DeployFilesError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write("\n".join(f"wrote {path}" for path in changed) or "deployment files up to date")
