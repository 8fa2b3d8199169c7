"""The Standard Webhooks signature, by the spec's own package: `v1,<base64 HMAC-SHA256 of
"{webhook-id}.{webhook-timestamp}.{body}">` with the key of WEBHOOK_SECRET (`whsec_<base64>`)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from django.conf import settings
from standardwebhooks import Webhook


def signed_headers(*, webhook_id: str, body: str, now: float | None = None) -> dict[str, str]:
    """The three headers of one attempt (a retry keeps the id, and is signed at its own time)."""
    timestamp = int(now if now is not None else time.time())
    signature = Webhook(settings.WEBHOOK_SECRET).sign(
        msg_id=webhook_id, timestamp=datetime.fromtimestamp(timestamp, tz=UTC), data=body
    )
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}
