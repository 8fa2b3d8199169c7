"""django-rq's `rqworker`, except that naming no queue means every task type whose
implementation can run here, and a named type that cannot is refused in one line."""

import logging

from django.core.management.base import CommandError
from django_rq.management.commands import rqworker

from factorize_app.apps import warn_about_insecure_settings
from factorize_app.tasks import ImplementationUnavailable, UnknownTaskType, get_task_type, task_types

logger = logging.getLogger("factorize_app.worker")


class Command(rqworker.Command):
    help = (
        "Runs RQ workers on the named queues; with none named, on every task type's queue whose "
        "requirements are installed here."
    )

    def handle(self, *args, **options):
        warn_about_insecure_settings()
        return super().handle(*(self.check_named(args) if args else self.runnable()), **options)

    @staticmethod
    def check_named(names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            try:
                get_task_type(name).model  # noqa: B018 (imports the implementation)
            except UnknownTaskType:
                raise CommandError(f"no task type is named {name!r}") from None
            except ImplementationUnavailable as exc:
                raise CommandError(str(exc)) from None
        return names

    @staticmethod
    def runnable() -> list[str]:
        names = []
        for task_type in task_types():
            try:
                task_type.model  # noqa: B018 (imports the implementation)
            except ImplementationUnavailable as exc:
                logger.warning("leaving out a task type", extra={"task_type": task_type.name, "reason": str(exc)})
                continue
            names.append(task_type.name)
        if not names:
            raise CommandError("no task type's requirements are installed here")
        return names
