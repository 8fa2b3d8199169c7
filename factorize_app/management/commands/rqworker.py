"""django-rq's `rqworker`, except that naming no queue means every task type's queue."""

from django_rq.management.commands import rqworker

from factorize_app.tasks import task_types


class Command(rqworker.Command):
    help = "Runs RQ workers on the named queues; with none named, on every task type's queue."

    def handle(self, *args, **options):
        return super().handle(*(args or [t.name for t in task_types()]), **options)
