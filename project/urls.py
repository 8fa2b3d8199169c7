from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("django-rq/", include("django_rq.urls")),
    path("", include("factorize_app.api.urls")),
]

handler404 = "factorize_app.api.exceptions.page_not_found"
handler500 = "factorize_app.api.exceptions.server_error"
