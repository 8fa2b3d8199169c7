"""`make run`: the web server, one worker per model, the webhooks worker, supervised.

Each model's worker is a process of its own (`rqworker <type>`), so the models set up in
parallel and one whose setup raises (or that crashes) takes only its own jobs down: it is
restarted with back-off and reported in /queues and /readyz, while the others serve.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from factorize_app import jobs
from factorize_app.devserver import envs, reload
from factorize_app.devserver.supervisor import Child, Supervisor, environment, install_signal_handlers
from factorize_app.tasks import task_types
from factorize_app.webhooks import worker as webhooks_worker

logger = logging.getLogger("factorize_app.devserver")


class Command(BaseCommand):
    help = "Serve for development: the web server and one supervised worker per model (`make run`)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("--no-reload", action="store_true", help="Do not restart processes when files change.")
        parser.add_argument("--no-web", action="store_true", help="Workers only.")
        parser.add_argument(
            "--envs-only", action="store_true", help="Install each model's requirements (or refuse it), then exit."
        )
        parser.add_argument(
            "--envs-dir",
            default=os.environ.get("MODEL_ENVS_DIR", str(Path(settings.BASE_DIR) / ".venv-models")),
            help="Where models whose requirements conflict get an environment of their own.",
        )

    def handle(self, *args, **options):
        root = Path(settings.BASE_DIR)
        types = task_types()
        envs_dir = Path(options["envs_dir"])
        plan = envs.plan(task_types=types, root=root, envs_dir=envs_dir)
        for env in plan:
            if env.python is None:
                self.stderr.write(env.refusal)
        try:
            envs.install(envs=plan, task_types=types, root=root, envs_dir=envs_dir)
        except (OSError, subprocess.SubprocessError) as exc:  # uv said why, above
            raise CommandError(f"could not install the models' requirements: {exc}") from None
        if options["envs_only"]:
            return
        for env in plan:
            if env.python is None:
                self._report_refusal(env)
        children = self.children(plan, root, web=not options["no_web"])
        supervisor = Supervisor(children)
        install_signal_handlers(supervisor)
        stop_watching = threading.Event()
        if not options["no_reload"]:
            watcher = reload.Watch(root=root, task_types={t.name: t for t in types})
            names = {child.name for child in children}
            thread = threading.Thread(
                target=reload.watch,
                kwargs={
                    "watcher": watcher,
                    "restart": supervisor.request_restart,
                    "everything": names,
                    "stop": stop_watching,
                },
                name="reload",
                daemon=True,
            )
            thread.start()
        if not options["no_web"]:
            port = os.environ.get("PORT", "8123")
            self.stdout.write(f"Serving on http://localhost:{port} (Ctrl-C stops the server and the workers)")
        try:
            supervisor.run()
        finally:
            stop_watching.set()

    @staticmethod
    def children(plan: list[envs.ModelEnv], root: Path, *, web: bool) -> list[Child]:
        python = sys.executable
        manage = str(root / "manage.py")
        children = [
            Child(
                env.task_name,
                [env.python, manage, "rqworker", env.task_name],
                environment(env.python),
                root,
                task_name=env.task_name,
            )
            for env in plan
            if env.python is not None
        ]
        parent = {webhooks_worker.PARENT_ENV: str(os.getpid())}  # it stops by itself if we are gone
        children.append(
            Child("webhooks", [python, manage, "rqworker", webhooks_worker.QUEUE], environment(python, **parent), root)
        )
        if web:
            children.append(Child(reload.WEB, [str(root / "scripts" / "start-web.sh")], environment(python), root))
        return children

    @staticmethod
    def _report_refusal(env: envs.ModelEnv) -> None:
        try:
            jobs.record_setup_failure(task_name=env.task_name, error=env.refusal)
        except jobs.QueueUnavailable as exc:
            logger.warning("could not record a refused model", extra={"task_type": env.task_name, "error": str(exc)})
