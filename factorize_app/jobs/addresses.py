"""Which addresses the service may be made to call: none that is not public.

A client can name a URL the service then requests (a webhook's target, a file in a job's input);
an address that is not globally routable (loopback, private, link-local, multicast, reserved,
deprecated site-local), or an IPv6 form embedding such an IPv4 address (NAT64, 6to4, Teredo,
IPv4-mapped, -compatible or -translated, ISATAP), would let a client reach the service's own
network (server-side request forgery). Callers refuse it unless that literal address is allowed.
"""

from __future__ import annotations

import ipaddress

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
