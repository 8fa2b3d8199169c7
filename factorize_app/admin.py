"""The admin's API keys: create (the key is shown once, on the page that answers the form), list
with their use, revoke. Staff only, as the whole admin."""

from __future__ import annotations

from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone

from factorize_app.api.identity.api_keys import forget_key
from factorize_app.models import KEY_SCHEME, ApiKey

PLAINTEXT_ATTRIBUTE = "_new_api_key_plaintext"


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "shown_prefix",
        "created_at",
        "last_used_at",
        "use_count",
        "revoked_at",
        "max_queued",
        "max_running",
        "max_redis_bytes",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    fields = [
        "name",
        "max_queued",
        "max_running",
        "max_redis_bytes",
        "shown_prefix",
        "created_at",
        "last_used_at",
        "use_count",
        "revoked_at",
    ]
    readonly_fields = ["shown_prefix", "created_at", "last_used_at", "use_count", "revoked_at"]
    actions = ["revoke"]

    @admin.display(description="key", ordering="prefix")
    def shown_prefix(self, api_key: ApiKey) -> str:
        return f"{KEY_SCHEME}_{api_key.prefix}_…" if api_key.prefix else "(made when saved)"

    def save_model(self, request, obj: ApiKey, form, change: bool) -> None:
        if not change:
            setattr(request, PLAINTEXT_ATTRIBUTE, obj.assign_new_key())
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj: ApiKey, post_url_continue=None):
        """The new key, on this page only: never in a redirect, a message cookie or the session."""
        plaintext = getattr(request, PLAINTEXT_ATTRIBUTE, None)
        if plaintext is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "opts": self.opts,
            "api_key": obj,
            "plaintext": plaintext,
        }
        response = TemplateResponse(request, "admin/factorize_app/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected API keys")
    def revoke(self, request, queryset) -> None:
        revoked = list(queryset.filter(revoked_at__isnull=True))
        queryset.filter(pk__in=[key.pk for key in revoked]).update(revoked_at=timezone.now())
        for api_key in revoked:
            forget_key(api_key.digest)
        self.message_user(
            request,
            f"{len(revoked)} API key(s) revoked; every web process refuses them within its key cache's "
            "lifetime (API_KEY_CACHE_SECONDS).",
            messages.SUCCESS,
        )
