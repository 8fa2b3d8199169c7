"""Every API path (task types, jobs, queues, health, metrics) answers with and without a trailing
slash; the pages (admin, dashboard, docs) live under a slash and redirect there without one."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from factorize_app.api.exceptions import read_only
from factorize_app.api.health import healthz, readyz
from factorize_app.api.metrics import metrics_view


def to_slash(prefix: str, pattern_name: str):
    """`/<prefix>` -> 302 to the named page (APPEND_SLASH is off: the API's POSTs never redirect)."""
    return path(prefix, RedirectView.as_view(pattern_name=pattern_name, query_string=True))


urlpatterns = [
    re_path(r"^healthz/?$", read_only(healthz), name="healthz"),
    re_path(r"^readyz/?$", read_only(readyz), name="readyz"),
    re_path(r"^metrics/?$", read_only(metrics_view), name="metrics"),
    path("api/schema/", read_only(SpectacularAPIView.as_view()), name="schema"),
    path("api/docs/", read_only(SpectacularSwaggerView.as_view(url_name="schema")), name="docs"),
    path("api/redoc/", read_only(SpectacularRedocView.as_view(url_name="schema")), name="redoc"),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),  # the browsable API's log in (django-axes guards it)
    path("django-rq/", include("django_rq.urls")),
    to_slash("api/schema", "schema"),
    to_slash("api/docs", "docs"),
    to_slash("api/redoc", "redoc"),
    to_slash("admin", "admin:index"),
    to_slash("django-rq", "django_rq:home"),
    path("", include("factorize_app.api.urls")),
]

handler400 = "factorize_app.api.exceptions.bad_request"
handler404 = "factorize_app.api.exceptions.page_not_found"
handler500 = "factorize_app.api.exceptions.server_error"
