"""Who is asking: a client's address (trusted proxy header or the connection) and its name."""

import hashlib

from django.conf import settings

_AUTH_SCHEMES = ("bearer ", "token ")


def client_address(meta) -> str:
    """The connection's address, or, behind a proxy, the address the configured header carries.

    Only CLIENT_IP_HEADER is believed: a client can send any X-Forwarded-For it likes. For
    X-Forwarded-For, the proxy appends the address it saw, so the last entry is the trusted one.
    """
    header = settings.CLIENT_IP_HEADER
    if header:
        value = meta.get("HTTP_" + header.upper().replace("-", "_"), "")
        address = value.rsplit(",", 1)[-1].strip()
        if address:
            return address
    return meta.get("REMOTE_ADDR", "") or "unknown"


def client_name(meta) -> str:
    """A client for fair queueing: its API token when it sends one (hashed: never stored as
    sent), else its address."""
    authorization = meta.get("HTTP_AUTHORIZATION", "")
    if authorization.lower().startswith(_AUTH_SCHEMES):
        token = authorization.split(" ", 1)[1].strip()
        if token:
            return "token-" + hashlib.sha256(token.encode()).hexdigest()[:24]
    return "address-" + client_address(meta)
