"""Where a webhook may go: no server-side request forgery.

At submit, a URL must be http(s) with a host in WEBHOOK_ALLOWED_HOSTS (`host` or `host:port`).
At delivery, the host is resolved once; an address that is not globally routable (loopback,
private, link-local, multicast, reserved, deprecated site-local), or an IPv6 form embedding such
an IPv4 address (NAT64, 6to4, Teredo, IPv4-mapped, -compatible or -translated, ISATAP), is
refused unless that literal address is itself listed, and the request goes to the checked
address (no second look-up a DNS answer could change).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from factorize_app.jobs import non_public

MAX_URL_LENGTH = 2000
_DEFAULT_PORTS = {"http": 80, "https": 443}


class WebhookRefused(Exception):
    """This URL may not be called (the message says why, for the client or the delivery record)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as in the URL (the Host header, the TLS server name)
    port: int
    path: str  # path and query


def target(url: str) -> Target:
    """The URL's parts if its scheme and host are allowed; WebhookRefused otherwise."""
    if not settings.WEBHOOK_ALLOWED_HOSTS:
        raise WebhookRefused("webhooks are off here (WEBHOOK_ALLOWED_HOSTS is empty).")
    if len(url) > MAX_URL_LENGTH:
        raise WebhookRefused(f"at most {MAX_URL_LENGTH} characters.")
    if not url.isascii() or any(char <= " " or char == "\x7f" for char in url):
        # urlsplit would drop tabs and newlines unseen, and an HTTP request line holds none of these.
        raise WebhookRefused("no spaces, control or non-ASCII characters (percent-encode them).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise WebhookRefused("not a valid URL.") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise WebhookRefused("an http:// or https:// URL is needed.")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused("no credentials in the URL: the signature authenticates deliveries.")
    port = port or _DEFAULT_PORTS[parts.scheme]
    host = parts.hostname.lower()
    if not _listed(host, port):
        raise WebhookRefused(f"{_host_port(host, port)} is not in WEBHOOK_ALLOWED_HOSTS.")
    path = parts.path or "/"
    return Target(parts.scheme, host, port, f"{path}?{parts.query}" if parts.query else path)


def origin(url: str) -> str:
    """`scheme://host:port` of a URL (the receiver, for its signing secret and its thread share)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    except ValueError:
        port = 0
    return f"{parts.scheme}://{_host_port(host, port)}"


def checked_address(destination: Target) -> str:
    """The address to connect to: the host's first address, resolved once, if every address it
    resolves to may be called. WebhookRefused otherwise (or if it does not resolve)."""
    try:
        infos = socket.getaddrinfo(destination.host, destination.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise WebhookRefused(f"{destination.host} does not resolve ({exc}).") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        reason = non_public(ip)
        if reason and not _listed(str(ip), destination.port):
            raise WebhookRefused(
                f"{destination.host} resolves to {ip} ({reason}), which WEBHOOK_ALLOWED_HOSTS does not list."
            )
    if not addresses:
        raise WebhookRefused(f"{destination.host} does not resolve.")
    return addresses[0]


# IPv6 forms that carry an IPv4 address a gateway or tunnel may deliver to: the embedded address
# must be public too (`is_global` judges only the IPv6 prefix, and calls most of these global).
def _listed(host: str, port: int) -> bool:
    allowed = settings.WEBHOOK_ALLOWED_HOSTS
    bare = host.removeprefix("[").removesuffix("]")
    return any(entry in allowed for entry in (bare, f"[{bare}]", _host_port(bare, port)))


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
