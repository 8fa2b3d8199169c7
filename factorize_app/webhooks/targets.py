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
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the last 32 bits
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: local use, any embedding
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")  # RFC 3056: bits 16-48
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291's deprecated IPv4-compatible form
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 (SIIT)
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")  # deprecated (RFC 3879), still routed by some


def non_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why `ip` (or an IPv4 address it embeds) may not be called; None for a public address."""
    if isinstance(ip, ipaddress.IPv4Address):
        if ip.is_multicast or not ip.is_global:
            return "not a public address"
        return None
    if ip.ipv4_mapped is not None:
        return non_public(ip.ipv4_mapped)
    if ip in _SITE_LOCAL or ip.is_site_local:
        return "a deprecated site-local address"
    if ip in _NAT64_LOCAL:
        return "a local-use NAT64 address"
    if ip.is_multicast or not ip.is_global:
        return "not a public address"
    for embedded in _embedded_ipv4(ip):
        if non_public(embedded):
            return f"embeds {embedded}, not a public address"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: mapped, compatible, translated, NAT64, 6to4,
    Teredo (server and client) and ISATAP (in the interface identifier of any prefix)."""
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    found = []
    if ip in _COMPATIBLE or ip in _TRANSLATED or ip in _NAT64:
        found.append(low32)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if (int(ip) >> 32) & 0xFDFFFFFF == 0x00005EFE:  # ISATAP: ::0:5efe:a.b.c.d or ::200:5efe:a.b.c.d
        found.append(low32)
    return found


def _listed(host: str, port: int) -> bool:
    allowed = settings.WEBHOOK_ALLOWED_HOSTS
    bare = host.removeprefix("[").removesuffix("]")
    return any(entry in allowed for entry in (bare, f"[{bare}]", _host_port(bare, port)))


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
