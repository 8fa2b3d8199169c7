from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from factorize_app.api.health import healthz, readyz
from factorize_app.api.metrics import metrics_view

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("admin/", admin.site.urls),
    path("django-rq/", include("django_rq.urls")),
    path("", include("factorize_app.api.urls")),
]

handler400 = "factorize_app.api.exceptions.bad_request"
handler404 = "factorize_app.api.exceptions.page_not_found"
handler500 = "factorize_app.api.exceptions.server_error"
