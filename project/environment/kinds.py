"""The kinds of value an environment variable holds. Each parses the raw text (a bad value raises
ValueError saying what was expected; the reader names the variable) and names itself for the
configuration reference and `.env.example`."""

import base64
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Kind:
    """`label` is the reference's Type column; `parse` turns the raw text into the value; with
    `empty_is_unset`, an empty value means the default (numbers: `JOB_TTL=` as unset)."""

    label: str
    parse: Callable[[str], Any] = str
    empty_is_unset: bool = False


def _items(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise ValueError("must be a boolean (1/0, true/false)")


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("must be an integer") from None


def _number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError("must be a number") from None


def _seconds(raw: str) -> list[float]:
    try:
        return [float(item) for item in _items(raw)]
    except ValueError:
        raise ValueError("must be comma-separated seconds, e.g. 1,5,30") from None


def _host_ports(raw: str) -> list[tuple[str, int]]:
    """`host:port,host:port`; an IPv6 host goes in brackets: `[::1]:26379`."""
    addresses = []
    for item in _items(raw):
        host, _, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"must be a comma-separated list of host:port, got {item!r}")
        addresses.append((host, int(port)))
    return addresses


def _type_urls(raw: str) -> dict[str, str]:
    """`type=redis://host:port/db,type=...`: each named task type's Redis (the URL is not echoed:
    it may hold a password). Whether each type exists is checked once the types are known."""
    urls: dict[str, str] = {}
    for item in _items(raw):
        name, equals, url = (part.strip() for part in item.partition("="))
        if not equals or not name or not url:
            raise ValueError("must be a comma-separated list of type=redis://host:port/db")
        if name in urls:
            raise ValueError(f"names the task type {name!r} twice")
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("redis", "rediss") or not parts.hostname or port == -1:
            raise ValueError(f"must give {name!r} a redis:// or rediss:// URL with a host (redis://host:port/db)")
        database = parts.path.lstrip("/")
        if database and not database.isdigit():
            raise ValueError(f"gives {name!r} a URL whose database is not a number")
        urls[name] = url
    return urls


def _networks(raw: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for item in _items(raw):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"must list IP addresses or CIDR networks, got {item!r}") from None
    return networks


def _pod_address(raw: str) -> str | None:
    """Kubernetes' status.podIP as an ALLOWED_HOSTS entry (the Host header of a scrape by address):
    the pod's own address only, never a pattern; an IPv6 one in brackets, as the Host header has it."""
    if not raw.strip():
        return None
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        raise ValueError("must be an IP address (status.podIP)") from None
    return f"[{address}]" if address.version == 6 else str(address)


def _proxy_ssl_header(raw: str) -> tuple[str, str] | None:
    """`X-Forwarded-Proto` or `X-Forwarded-Proto,https` (or Django's `HTTP_X_FORWARDED_PROTO,https`)
    -> the (META key, value) pair Django wants; empty -> None."""
    if not raw.strip():
        return None
    name, _, value = (part.strip() for part in raw.partition(","))
    key = name.upper().replace("-", "_")
    if not key or not key.replace("_", "").isalnum():
        raise ValueError("must be a header name [,value]")
    return (key if key.startswith("HTTP_") else f"HTTP_{key}", value or "https")


def _webhook_secret(raw: str) -> str:
    """A malformed secret refuses the start: every delivery would be signed with the wrong key."""
    key = raw.removeprefix("whsec_")
    try:
        valid = raw.startswith("whsec_") and len(base64.b64decode(key + "=" * (-len(key) % 4), validate=True)) >= 16
    except ValueError:
        valid = False
    if raw and not valid:
        raise ValueError("must be `whsec_` and a base64 key of 16+ bytes, e.g. whsec_$(openssl rand -base64 32)")
    return raw


def choice(*values: str) -> Kind:
    def parse(raw: str) -> str:
        if raw not in values:
            raise ValueError(f"must be {' or '.join(values)}")
        return raw

    return Kind(" or ".join(f"`{value}`" for value in values), parse)


def at_least(kind: Kind, minimum: float) -> Kind:
    def parse(raw: str) -> Any:
        value = kind.parse(raw)
        if value < minimum:
            raise ValueError(f"must be {minimum:g} or more")
        return value

    return Kind(f"{kind.label}, {minimum:g}+", parse, kind.empty_is_unset)


def above(kind: Kind, bound: float) -> Kind:
    def parse(raw: str) -> Any:
        value = kind.parse(raw)
        if not value > bound:
            raise ValueError(f"must be above {bound:g}")
        return value

    return Kind(f"{kind.label} > {bound:g}", parse, kind.empty_is_unset)


TEXT = Kind("text")
URL = Kind("URL")
RATE = Kind("rate (`N/second`, `N/minute`, ...)")  # DRF's throttle syntax, parsed by DRF
BOOL = Kind("boolean", _bool)
INT = Kind("integer", _int, empty_is_unset=True)
NUMBER = Kind("number", _number, empty_is_unset=True)
LIST = Kind("comma-separated list", _items)
SECONDS_LIST = Kind("comma-separated seconds", _seconds)
HOST_PORTS = Kind("comma-separated `host:port`", _host_ports)
TYPE_URLS = Kind("comma-separated `type=redis://host:port/db`", _type_urls)
NETWORKS = Kind("comma-separated addresses or CIDR networks", _networks)
POD_ADDRESS = Kind("IP address", _pod_address)
PROXY_SSL_HEADER = Kind("header name [,value]", _proxy_ssl_header)
WEBHOOK_SECRET = Kind("`whsec_` base64 key", _webhook_secret)
SIZE = Kind("size (`512m`)")  # Docker's and Redis's sizes, read by docker compose
