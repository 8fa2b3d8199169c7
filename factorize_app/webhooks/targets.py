"""Where a webhook may go: no server-side request forgery (jobs/addresses.py's checks).

At submit, a URL must be http(s) with a host in WEBHOOK_ALLOWED_HOSTS (`host` or `host:port`).
At delivery, the host is resolved once; an address that is not globally routable (loopback,
private, link-local, multicast, reserved, deprecated site-local), or an IPv6 form embedding such
an IPv4 address (NAT64, 6to4, Teredo, IPv4-mapped, -compatible or -translated, ISATAP), is
refused unless that literal address is itself listed, and the request goes to the checked
address (no second look-up a DNS answer could change).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings

from factorize_app.jobs import addresses
from factorize_app.jobs.addresses import MAX_URL_LENGTH, Target

__all__ = ["MAX_URL_LENGTH", "Target", "WebhookRefused", "checked_address", "origin", "target"]
SETTING = "WEBHOOK_ALLOWED_HOSTS"


class WebhookRefused(Exception):
    """This URL may not be called (the message says why, for the client or the delivery record)."""


def target(url: str) -> Target:
    """The URL's parts if its scheme and host are allowed; WebhookRefused otherwise."""
    if not settings.WEBHOOK_ALLOWED_HOSTS:
        raise WebhookRefused("webhooks are off here (WEBHOOK_ALLOWED_HOSTS is empty).")
    try:
        return addresses.url_target(url, allowed=settings.WEBHOOK_ALLOWED_HOSTS, setting=SETTING)
    except addresses.AddressRefused as refused:
        raise WebhookRefused(str(refused)) from None


def origin(url: str) -> str:
    """`scheme://host:port` of a URL (the receiver, for its signing secret and its thread share)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or addresses.DEFAULT_PORTS.get(parts.scheme, 0)
    except ValueError:
        port = 0
    return f"{parts.scheme}://{addresses.host_port(host, port)}"


def checked_address(destination: Target) -> str:
    """The address to connect to: the host's first address, resolved once, if every address it
    resolves to may be called. WebhookRefused otherwise (or if it does not resolve)."""
    try:
        return addresses.checked_address(destination, allowed=settings.WEBHOOK_ALLOWED_HOSTS, setting=SETTING)
    except addresses.AddressRefused as refused:
        raise WebhookRefused(str(refused)) from None
