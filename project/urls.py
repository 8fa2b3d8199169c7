from django.contrib import admin
from django.urls import include, path

from factorize_app.api.health import healthz, readyz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("django-rq/", include("django_rq.urls")),
    path("", include("factorize_app.api.urls")),
]

handler404 = "factorize_app.api.exceptions.page_not_found"
handler500 = "factorize_app.api.exceptions.server_error"
