"""Typed readers for environment variables, so a bad value fails at start with its name."""

import ipaddress
import os
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}.")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def redis_url_with_options(url: str, *, timeout: int, max_connections: int) -> str:
    """Add client options to a Redis URL (django-rq passes only the URL to redis-py): socket
    timeouts, and a pool large enough for every server thread (redis-py's default is 100)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("socket_timeout", str(timeout))
    query.setdefault("socket_connect_timeout", str(timeout))
    query.setdefault("max_connections", str(max_connections))
    return urlunsplit(parts._replace(query=urlencode(query)))


def env_host_ports(name: str) -> list[tuple[str, int]]:
    """A comma-separated list of `host:port` addresses ("" means none), e.g. the Redis Sentinels.

    An IPv6 host goes in brackets: `[::1]:26379`."""
    addresses = []
    for item in env_list(name, []):
        host, _, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ImproperlyConfigured(f"{name} must be a comma-separated list of host:port, got {item!r}.")
        addresses.append((host, int(port)))
    return addresses


def redis_sentinel_connection(
    url: str, *, sentinels: list[tuple[str, int]], master_name: str, timeout: int, max_connections: int
) -> dict[str, Any]:
    """django-rq's connection settings for a Sentinel-managed Redis (django_rq.connection_utils).

    The sentinels name the master, so REDIS_URL's host and port are not used; its database number,
    user and password still are, so one REDIS_URL serves both set-ups. The same socket timeouts as
    for a plain Redis apply to the master and to the sentinels (redis-py's sentinel clients have
    none unless given)."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ImproperlyConfigured(
            f"With REDIS_SENTINELS set, REDIS_URL must be a redis:// URL, got {parts.scheme}://."
        )
    database = parts.path.lstrip("/") or dict(parse_qsl(parts.query)).get("db", "0")
    if not database.isdigit():
        raise ImproperlyConfigured(f"REDIS_URL's database number must be an integer, got {database!r}.")
    return {
        "SENTINELS": sentinels,
        "MASTER_NAME": master_name,
        "DB": int(database),
        "USERNAME": unquote(parts.username) if parts.username else None,
        "PASSWORD": unquote(parts.password) if parts.password else None,
        "SOCKET_TIMEOUT": timeout,
        "CONNECTION_KWARGS": {"socket_connect_timeout": timeout, "max_connections": max_connections},
        "SENTINEL_KWARGS": {"socket_timeout": timeout, "socket_connect_timeout": timeout},
    }


def env_networks(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """A comma-separated list of IP addresses or CIDR networks ("" means none)."""
    networks = []
    for item in env_list(name, []):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"{name} must list IP addresses or CIDR networks, got {item!r}.") from None
    return networks
