"""API routes, derived from the task type registry; every path works with or without a slash."""

from rest_framework.routers import DefaultRouter

from factorize_app.api.views import JobViewSet, QueueViewSet, TaskViewSet
from factorize_app.tasks import task_types

router = DefaultRouter()
router.trailing_slash = "/?"  # DRF takes a bool; the optional slash is its documented idiom
for task_type in task_types():
    router.register(task_type.path, TaskViewSet.for_type(task_type), basename=task_type.name)
router.register("jobs", JobViewSet, basename="job")
router.register("queues", QueueViewSet, basename="queue")

urlpatterns = router.urls
