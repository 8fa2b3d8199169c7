from django.apps import AppConfig
from django.conf import settings


class FactorizeAppConfig(AppConfig):
    name = "factorize_app"
    verbose_name = "Job queue"

    def ready(self) -> None:
        from factorize_app.tasks import task_types

        # One RQ queue per task type, named after it: derived here so that a task type is
        # declared in one place (its module, listed in TASK_TYPES) and nowhere else.
        settings.RQ_QUEUES = {
            task_type.name: {**settings.RQ_CONNECTION, "DEFAULT_TIMEOUT": task_type.setting("job_timeout")}
            for task_type in task_types()
        }
