"""Which addresses the service may be made to call: none that is not public.

A client can name a URL the service then requests (a webhook's target, a file in a job's input);
an address that is not globally routable (loopback, private, link-local, multicast, reserved,
deprecated site-local), or an IPv6 form embedding such an IPv4 address (NAT64, 6to4, Teredo,
IPv4-mapped, -compatible or -translated, ISATAP), would let a client reach the service's own
network (server-side request forgery). Callers refuse it unless that literal address is allowed.

A URL is checked in two steps: its form and host against the caller's allow-list (`url_target`),
then, just before the request, its host resolved once and every address it resolves to checked
(`checked_address`); the request goes to that address (`pinned_connection`), so no second look-up
a DNS answer could change decides where it goes.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2000
DEFAULT_PORTS = {"http": 80, "https": 443}


class AddressRefused(Exception):
    """This URL may not be called (the message says why, for the client or a delivery record)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as in the URL (the Host header, the TLS server name)
    port: int
    path: str  # path and query


def url_target(url: str, *, allowed: Collection[str], setting: str, any_host: bool = False) -> Target:
    """The URL's parts if it is an http(s) URL whose host `allowed` lists (`host` or `host:port`;
    any host with `any_host`); AddressRefused naming `setting` otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise AddressRefused(f"at most {MAX_URL_LENGTH} characters.")
    if not url.isascii() or any(char <= " " or char == "\x7f" for char in url):
        # urlsplit would drop tabs and newlines unseen, and an HTTP request line holds none of these.
        raise AddressRefused("no spaces, control or non-ASCII characters (percent-encode them).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise AddressRefused("not a valid URL.") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise AddressRefused("an http:// or https:// URL is needed.")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("no credentials in the URL.")
    port = port or DEFAULT_PORTS[parts.scheme]
    host = parts.hostname.lower()
    if not any_host and not listed(host, port, allowed):
        raise AddressRefused(f"{host_port(host, port)} is not in {setting}.")
    path = parts.path or "/"
    return Target(parts.scheme, host, port, f"{path}?{parts.query}" if parts.query else path)


def checked_address(destination: Target, *, allowed: Collection[str], setting: str) -> str:
    """The address to connect to: the host's first address, resolved once, if every address it
    resolves to is public or listed in `allowed`. AddressRefused otherwise (or if it does not resolve)."""
    try:
        infos = socket.getaddrinfo(destination.host, destination.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise AddressRefused(f"{destination.host} does not resolve ({exc}).") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        reason = non_public(ip)
        if reason and not listed(str(ip), destination.port, allowed):
            raise AddressRefused(f"{destination.host} resolves to {ip} ({reason}), which {setting} does not list.")
    if not addresses:
        raise AddressRefused(f"{destination.host} does not resolve.")
    return addresses[0]


def listed(host: str, port: int, allowed: Collection[str]) -> bool:
    bare = host.removeprefix("[").removesuffix("]")
    return any(entry in allowed for entry in (bare, f"[{bare}]", host_port(bare, port)))


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class PinnedHTTPConnection(http.client.HTTPConnection):
    """http.client, connecting to the address checked rather than looking the host up again. The
    TCP socket is kept (`raw_socket`) for `shut`: http.client lets go of `sock` once an answer that
    closes the connection begins."""

    def __init__(self, destination: Target, address: str, timeout: float) -> None:
        super().__init__(destination.host, destination.port, timeout=timeout)
        self._address = address
        self.raw_socket: socket.socket | None = None

    def connect(self) -> None:
        self.sock = self.raw_socket = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PinnedHTTPSConnection(PinnedHTTPConnection):
    """The same over TLS: the certificate is verified against the URL's host name."""

    default_port = http.client.HTTPS_PORT

    def connect(self) -> None:
        super().connect()
        self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.host)


def pinned_connection(destination: Target, address: str, timeout: float) -> PinnedHTTPConnection:
    kind = PinnedHTTPSConnection if destination.scheme == "https" else PinnedHTTPConnection
    return kind(destination, address, timeout)


def shut(connection: PinnedHTTPConnection) -> None:
    """End a request whose time is up: http.client's timeout bounds each read, not the answer, so
    a byte every few seconds would otherwise hold the thread forever. Wakes the blocked read (TLS too)."""
    sock = connection.raw_socket
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

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
