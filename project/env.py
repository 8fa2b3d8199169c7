"""django-rq's Redis connection settings, built from the environment's REDIS_* values."""

from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured


def redis_url_with_options(url: str, *, timeout: int, max_connections: int) -> str:
    """Add client options to a Redis URL (django-rq passes only the URL to redis-py): socket
    timeouts, and a pool large enough for every server thread (redis-py's default is 100)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("socket_timeout", str(timeout))
    query.setdefault("socket_connect_timeout", str(timeout))
    query.setdefault("max_connections", str(max_connections))
    return urlunsplit(parts._replace(query=urlencode(query)))


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

