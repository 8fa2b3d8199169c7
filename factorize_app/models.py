"""API keys: who a request is, checked, so that fair order and limits count per verified client.

A key is `fzk_<prefix>_<secret>`: the prefix is public (shown in the admin and in logs to tell keys
apart), the secret is 256 random bits. Only the key's SHA-256 is stored: keys are long random
tokens, not passwords, so a slow password hash would add cost per request and no safety.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from django.db import models, transaction
from django.utils import timezone

KEY_SCHEME = "fzk"
PREFIX_BYTES = 4  # 8 hex characters: enough to tell keys apart, too few to matter as a secret
SECRET_BYTES = 32
# `fzk_` + 8 hex + `_` + 43 URL-safe base64 characters (token_urlsafe(32)): nothing else is a key.
KEY_PATTERN = re.compile(r"fzk_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
MAX_KEY_LENGTH = 56


def key_digest(key: str) -> str:
    """The stored form of a key: its SHA-256, in hex."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(models.Model):
    name = models.CharField(max_length=100, help_text="Who holds the key, e.g. a team or a service.")
    prefix = models.CharField(max_length=16, unique=True, editable=False, help_text="The key's public part.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    use_count = models.BigIntegerField(default=0, editable=False)
    max_queued = models.PositiveIntegerField(
        null=True, blank=True, help_text="Jobs this key may have queued at once; empty: MAX_QUEUED_PER_CLIENT."
    )
    max_running = models.PositiveIntegerField(
        null=True, blank=True, help_text="Jobs this key may have running at once; empty: MAX_RUNNING_PER_CLIENT."
    )
    max_redis_bytes = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Bytes of Redis memory this key's jobs may hold at once; empty: the per-client budget.",
    )

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({KEY_SCHEME}_{self.prefix}_…)"

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def new_key(cls) -> tuple[str, str]:
        """A fresh (prefix, plaintext key) whose prefix no stored key has."""
        while True:
            prefix = secrets.token_hex(PREFIX_BYTES)
            if not cls.objects.filter(prefix=prefix).exists():
                return prefix, f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"

    def assign_new_key(self) -> str:
        """Give this (unsaved) key its prefix and digest; the plaintext, which is never stored."""
        self.prefix, plaintext = self.new_key()
        self.digest = key_digest(plaintext)
        return plaintext

    @classmethod
    def create_key(
        cls,
        *,
        name: str,
        max_queued: int | None = None,
        max_running: int | None = None,
        max_redis_bytes: int | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key; (the stored key, its plaintext). The plaintext exists only here: show it once."""
        api_key = cls(name=name, max_queued=max_queued, max_running=max_running, max_redis_bytes=max_redis_bytes)
        plaintext = api_key.assign_new_key()
        api_key.save()
        return api_key, plaintext

    @classmethod
    def revoke(cls, *, prefix: str) -> ApiKey:
        """Revoke the key with this prefix (a no-op if it already is); raises ApiKey.DoesNotExist.

        Each web process notices within API_KEY_CACHE_SECONDS (its cache of key lookups)."""
        with transaction.atomic():
            api_key = cls.objects.select_for_update().get(prefix=prefix)
            if api_key.revoked_at is None:
                api_key.revoked_at = timezone.now()
                api_key.save(update_fields=["revoked_at"])
        return api_key
