import logging

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

security_logger = logging.getLogger("factorize_app.security")


class FactorizeAppConfig(AppConfig):
    name = "factorize_app"
    verbose_name = "Job queue"

    def ready(self) -> None:
        from factorize_app.jobs.connection import install_bounded_resolver
        from factorize_app.tasks import task_types

        install_bounded_resolver()  # before any Redis connection: name resolution bounded too

        # One RQ queue per task type, named after it: derived here so that a task type is
        # declared in one place (its folder under factorize_app/tasks/, discovered) and nowhere else.
        # A type named in TASK_REDIS_URLS has its queue on its own Redis (django-rq's per-queue URL).
        known = {task_type.name for task_type in task_types()}
        unknown = sorted(set(settings.TASK_REDIS_URLS) - known)
        if unknown:
            raise ImproperlyConfigured(
                f"TASK_REDIS_URLS names no task type {', '.join(map(repr, unknown))}; "
                f"the task types are {', '.join(sorted(known))}."
            )
        settings.RQ_QUEUES = {
            task_type.name: {
                **settings.TASK_RQ_CONNECTIONS.get(task_type.name, settings.RQ_CONNECTION),
                "DEFAULT_TIMEOUT": task_type.setting("job_timeout"),
            }
            for task_type in task_types()
        }


def insecure_settings_warning(config=settings) -> str | None:
    """The one start-up warning about insecure defaults (None when there is nothing to say).

    `config`: the settings, or the settings module itself (scripts/web-preflight.py reads it
    without setting Django up)."""
    problems = []
    if config.SECRET_KEY == config.INSECURE_DEV_SECRET_KEY:
        problems.append(
            "SECRET_KEY is the public development default, so anyone can forge admin sessions: "
            "set SECRET_KEY to a long random value (and PRODUCTION=1)"
        )
    if "*" in config.ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS contains '*', so any Host header is answered: list the host names instead")
    if not problems:
        return None
    return "INSECURE settings, for local development only: " + "; ".join(problems) + "."


def warn_about_insecure_settings(config=settings) -> None:
    """Log the insecure-defaults warning, once per server or worker start (their entry points call it)."""
    message = insecure_settings_warning(config)
    if message:
        security_logger.warning(message)
