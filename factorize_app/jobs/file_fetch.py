"""Fetching a file URL given in a job's input: no server-side request forgery, bounded in bytes and time.

The same checks as webhooks (jobs/addresses.py): http(s) only, a host FILE_URL_ALLOWED_HOSTS
allows (`*`: any), resolved once, every address it resolves to public unless that literal address
is listed, and the connection made to the address checked (no second look-up a DNS answer could
change). Redirects are followed a few times, each target checked as the first. The whole fetch
(look-ups, connects, every answer, the body) ends by FILE_URL_TIMEOUT, a body past `max_bytes`
is cut off, and nothing is kept in memory beyond a read buffer.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from typing import IO
from urllib.parse import unquote, urljoin, urlsplit

from django.conf import settings

from factorize_app.jobs import addresses

SETTING = "FILE_URL_ALLOWED_HOSTS"
MAX_REDIRECTS = 3
CHUNK = 64 * 1024
USER_AGENT = "factorize-file-inputs/1"
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
        connection = addresses.pinned_connection(destination, address, remaining)
        cutoff = threading.Timer(remaining, addresses.shut, (connection,))
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


def _get(
    connection: http.client.HTTPConnection, destination: addresses.Target, into, max_bytes: int
) -> tuple[str | None, str]:
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


def _target(url: str) -> addresses.Target:
    allowed = settings.FILE_URL_ALLOWED_HOSTS
    try:
        return addresses.url_target(url, allowed=allowed, setting=SETTING, any_host="*" in allowed)
    except addresses.AddressRefused as refused:
        raise FetchRefused(str(refused)) from None


def _checked_address(destination: addresses.Target) -> str:
    try:
        return addresses.checked_address(destination, allowed=settings.FILE_URL_ALLOWED_HOSTS, setting=SETTING)
    except addresses.AddressRefused as refused:
        raise FetchRefused(str(refused)) from None
