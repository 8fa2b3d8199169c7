"""Fetching a file URL given in a job's input: no server-side request forgery, bounded in bytes and time.

The same checks as webhooks (webhooks/targets.py): http(s) only, a host FILE_URL_ALLOWED_HOSTS
allows (`*`: any), resolved once, every address it resolves to public unless that literal address
is listed, and the connection made to the address checked (no second look-up a DNS answer could
change). Redirects are followed a few times, each target checked as the first. The whole fetch
(look-ups, connects, every answer, the body) ends by FILE_URL_TIMEOUT, a body past `max_bytes`
is cut off, and nothing is kept in memory beyond a read buffer.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import IO
from urllib.parse import unquote, urljoin, urlsplit

from django.conf import settings

from factorize_app.jobs.addresses import non_public

MAX_URL_LENGTH = 2000
MAX_REDIRECTS = 3
CHUNK = 64 * 1024
USER_AGENT = "factorize-file-inputs/1"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = (301, 302, 303, 307, 308)


class FetchRefused(Exception):
    """The URL may not be fetched, or its answer is not a file (the message says why, for the client)."""


class FetchTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"the file at this URL holds more than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class Fetched:
    content_type: str  # the answer's Content-Type, without parameters ('' if none)
    name: str  # the last segment of the URL's path


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str


def fetch(url: str, *, into: IO[bytes], max_bytes: int, deadline: float | None = None) -> Fetched:
    """Write the body at `url` into `into`; FetchRefused, FetchTooLarge or TimeoutError otherwise.
    `deadline` (a time.monotonic() value) ends it sooner: a request's fetches share one."""
    own = time.monotonic() + settings.FILE_URL_TIMEOUT
    deadline = own if deadline is None else min(deadline, own)
    for _ in range(MAX_REDIRECTS + 1):
        destination = _target(url)
        address = _checked_address(destination)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        kind = _PinnedHTTPSConnection if destination.scheme == "https" else _PinnedHTTPConnection
        connection = kind(destination, address, remaining)
        cutoff = threading.Timer(remaining, _shut, (connection,))
        cutoff.daemon = True
        cutoff.start()
        try:
            location, content_type = _get(connection, destination, into, max_bytes)
        except (OSError, http.client.HTTPException) as error:
            if time.monotonic() >= deadline:
                break
            raise FetchRefused(f"the URL could not be fetched: {type(error).__name__}: {error}") from None
        finally:
            cutoff.cancel()
            connection.close()
        if time.monotonic() >= deadline:
            break
        if location is None:
            return Fetched(content_type=content_type, name=unquote(urlsplit(url).path.rsplit("/", 1)[-1])[:200])
        url = urljoin(url, location)
    else:
        raise FetchRefused(f"more than {MAX_REDIRECTS} redirects.")
    raise TimeoutError(f"the URL did not answer in full within FILE_URL_TIMEOUT ({settings.FILE_URL_TIMEOUT:g} s).")


def _get(connection: http.client.HTTPConnection, destination: _Target, into, max_bytes: int) -> tuple[str | None, str]:
    """One GET: (a redirect's Location, ''), or (None, the Content-Type) once the body is in `into`."""
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"}
    connection.request("GET", destination.path, headers=headers)
    response = connection.getresponse()
    if response.status in _REDIRECTS:
        location = response.getheader("Location")
        if not location:
            raise FetchRefused(f"the URL answered {response.status} with no Location.")
        return location, ""
    if response.status != 200:
        raise FetchRefused(f"the URL answered {response.status}, not 200.")
    declared = response.getheader("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise FetchTooLarge(max_bytes)
    size = 0
    while chunk := response.read(CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise FetchTooLarge(max_bytes)
        into.write(chunk)
    return None, (response.getheader("Content-Type") or "").split(";", 1)[0].strip().lower()


def _shut(connection: http.client.HTTPConnection) -> None:
    """The fetch's time is up: http.client's timeout bounds each read, not the whole answer."""
    sock = connection.raw_socket  # http.client lets go of `sock` once an answer that closes has begun
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # wakes the blocked read (TLS too)


def _target(url: str) -> _Target:
    if len(url) > MAX_URL_LENGTH:
        raise FetchRefused(f"a URL of at most {MAX_URL_LENGTH} characters is needed.")
    if not url.isascii() or any(char <= " " or char == "\x7f" for char in url):
        raise FetchRefused("no spaces, control or non-ASCII characters in the URL (percent-encode them).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FetchRefused("not a valid URL.") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise FetchRefused("an http:// or https:// URL is needed.")
    if parts.username is not None or parts.password is not None:
        raise FetchRefused("no credentials in the URL.")
    port = port or _DEFAULT_PORTS[parts.scheme]
    host = parts.hostname.lower()
    if "*" not in settings.FILE_URL_ALLOWED_HOSTS and not _listed(host, port):
        raise FetchRefused(f"{_host_port(host, port)} is not in FILE_URL_ALLOWED_HOSTS.")
    path = parts.path or "/"
    return _Target(parts.scheme, host, port, f"{path}?{parts.query}" if parts.query else path)


def _checked_address(destination: _Target) -> str:
    """The host's first address, resolved once, if every address it resolves to may be fetched."""
    try:
        infos = socket.getaddrinfo(destination.host, destination.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise FetchRefused(f"{destination.host} does not resolve ({exc}).") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        reason = non_public(ip)
        if reason and not _listed(str(ip), destination.port):
            raise FetchRefused(
                f"{destination.host} resolves to {ip} ({reason}), which FILE_URL_ALLOWED_HOSTS does not list."
            )
    if not addresses:
        raise FetchRefused(f"{destination.host} does not resolve.")
    return addresses[0]


def _listed(host: str, port: int) -> bool:
    allowed = settings.FILE_URL_ALLOWED_HOSTS
    bare = host.removeprefix("[").removesuffix("]")
    return any(entry in allowed for entry in (bare, f"[{bare}]", _host_port(bare, port)))


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """http.client, connecting to the address checked rather than looking the host up again."""

    def __init__(self, destination: _Target, address: str, timeout: float) -> None:
        super().__init__(destination.host, destination.port, timeout=timeout)
        self._address = address
        self.raw_socket: socket.socket | None = None

    def connect(self) -> None:
        self.sock = self.raw_socket = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """The same over TLS, the certificate verified against the URL's host name."""

    default_port = http.client.HTTPS_PORT

    def connect(self) -> None:
        super().connect()
        self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.host)
