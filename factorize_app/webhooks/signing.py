"""The Standard Webhooks signature, by the spec's own package: `v1,<base64 HMAC-SHA256 of
"{webhook-id}.{webhook-timestamp}.{body}">`, with a key of each receiver's own.

One key for every receiver would let any subscriber replay a delivery it received (signed, and
fresh within the receivers' tolerance) to another tenant's receiver. So each (owner, receiver)
pair signs with its own secret, derived from WEBHOOK_SECRET by HMAC: the same client's
deliveries to one receiver (scheme, host and port) share a secret across jobs, which the
subscriber is told on subscribe and by `GET /jobs/<id>/webhooks`. Changing WEBHOOK_SECRET
changes every receiver's secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

from django.conf import settings
from standardwebhooks import Webhook

from factorize_app.webhooks.targets import origin

_CONTEXT = b"factorize webhook receiver secret v1"


def receiver_secret(*, owner: str, url: str) -> str:
    """The `whsec_` secret that signs `owner`'s deliveries to the receiver of `url`."""
    raw = settings.WEBHOOK_SECRET.removeprefix("whsec_")
    master = base64.b64decode(raw + "=" * (-len(raw) % 4))
    derived = hmac.new(master, b"\n".join([_CONTEXT, owner.encode(), origin(url).encode()]), hashlib.sha256)
    return "whsec_" + base64.b64encode(derived.digest()).decode()


def signed_headers(*, webhook_id: str, body: str, secret: str, now: float | None = None) -> dict[str, str]:
    """The three headers of one attempt (a retry keeps the id, and is signed at its own time)."""
    timestamp = int(now if now is not None else time.time())
    signature = Webhook(secret).sign(msg_id=webhook_id, timestamp=datetime.fromtimestamp(timestamp, tz=UTC), data=body)
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}
