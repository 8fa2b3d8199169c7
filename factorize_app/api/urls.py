"""API routes, derived from the task type registry; every path works with or without a slash.

`/` is the router's index for API clients and the front page for a browser (api/front_page.py);
`/docs` is the short address of the API docs."""

from django.urls import re_path
from django.views.generic import RedirectView
from rest_framework.routers import DefaultRouter

from factorize_app.api.bodies import streamed_body
from factorize_app.api.files import FileDownloadView, FileUploadView
from factorize_app.api.front_page import FrontPageView
from factorize_app.api.views import JobViewSet, QueueViewSet, TaskViewSet
from factorize_app.tasks import task_types

router = DefaultRouter()
router.APIRootView = FrontPageView
router.trailing_slash = "/?"  # DRF takes a bool; the optional slash is its documented idiom
for task_type in task_types():
    router.register(task_type.path, TaskViewSet.for_type(task_type), basename=task_type.name)
router.register("jobs", JobViewSet, basename="job")
router.register("queues", QueueViewSet, basename="queue")

urlpatterns = [
    re_path(r"^docs/?$", RedirectView.as_view(pattern_name="docs", query_string=True), name="docs-short"),
    # Uploads stream their bodies (api/bodies.py leaves them to the view's own limit, UPLOAD_MAX_BYTES).
    re_path(r"^files/?$", streamed_body(FileUploadView.as_view()), name="file-upload"),
    re_path(r"^files/(?P<file_id>[^/]+)/?$", FileDownloadView.as_view(), name="file-detail"),
    *router.urls,
]
