"""The API's authentication in its OpenAPI schema (Swagger UI's Authorize button).

drf-spectacular finds these extensions once imported: project/urls.py imports this module with
its schema views, so that the web server's start does not pay for drf-spectacular's imports.
"""

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension

from factorize_app.api.authentication import ApiKeyAuthentication, SessionCookieAuthentication


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """The API key in the OpenAPI schema (and Swagger UI's Authorize button)."""

    target_class = ApiKeyAuthentication
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`manage.py create_api_key` or the admin): `Authorization: Bearer <key>`.",
        }


class SessionCookieScheme(OpenApiAuthenticationExtension):
    target_class = SessionCookieAuthentication
    name = "cookieAuth"  # as drf-spectacular names DRF's own session authentication

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}
