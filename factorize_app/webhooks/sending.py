"""Sending one attempt over HTTP: connect to the address checked, POST the signed body, read the
status, all by the attempt's deadline.

The URL is checked again (the settings may have changed since the submit) and its host resolved
once (webhooks.targets); the connection goes to that address (no second look-up a DNS answer
could change), TLS verified against the URL's host name. Redirects are never followed.
"""

from __future__ import annotations

import http.client
import threading
import time

from django.conf import settings

from factorize_app.jobs import addresses
from factorize_app.webhooks.deliveries import Delivery
from factorize_app.webhooks.signing import receiver_secret, signed_headers
from factorize_app.webhooks.targets import Target, checked_address, target

USER_AGENT = "factorize-webhooks/1"


def post(delivery: Delivery) -> int:
    """POST the delivery to its URL (checked again: the settings may have changed since the
    submit) at the address checked; the answer's status code. Everything (the look-up, connect,
    TLS, the request, the answer's status line, headers and first 64 KiB) ends by the attempt's
    deadline (WEBHOOK_TIMEOUT after its claim): a receiver dripping its answer a byte at a time is
    cut off then, and its attempt counts as timed out."""
    destination = target(delivery.url)
    address = checked_address(destination)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **signed_headers(
            webhook_id=delivery.delivery_id,
            body=delivery.body,
            secret=receiver_secret(owner=delivery.owner, url=delivery.url),
        ),
    }
    remaining = delivery.deadline - time.time()
    if remaining <= 0:  # the look-up took the whole attempt: nothing was sent
        raise TimeoutError(f"no answer within WEBHOOK_TIMEOUT ({settings.WEBHOOK_TIMEOUT:g} s)")
    connection = _connection(destination, address, remaining)
    cutoff = _Cutoff(connection, remaining)
    try:
        connection.request("POST", destination.path, body=delivery.body.encode(), headers=headers)
        response = connection.getresponse()
        response.read(65536)  # a little of the answer, so the receiver is not cut off mid-write
        status = response.status
    except (OSError, http.client.HTTPException):
        if cutoff.fired.is_set():
            raise TimeoutError(f"no complete answer within WEBHOOK_TIMEOUT ({settings.WEBHOOK_TIMEOUT:g} s)") from None
        raise
    finally:
        cutoff.cancel()
        connection.close()
    if cutoff.fired.is_set():
        raise TimeoutError(f"no complete answer within WEBHOOK_TIMEOUT ({settings.WEBHOOK_TIMEOUT:g} s)")
    return status


class _Cutoff:
    """Shuts the connection's socket when the attempt's time is up: http.client's timeout bounds
    each read, not the answer, so a byte every few seconds would otherwise hold the thread forever."""

    def __init__(self, connection: addresses.PinnedHTTPConnection, seconds: float) -> None:
        self._connection = connection
        self.fired = threading.Event()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired.set()
        addresses.shut(self._connection)

    def cancel(self) -> None:
        self._timer.cancel()


class _CompleteResponse(http.client.HTTPResponse):
    """http.client takes a connection closed halfway through the headers for their end; here that
    answer is an error (a receiver killed mid-answer did not take the delivery)."""

    def begin(self) -> None:
        self.fp = _LastLine(self.fp)
        super().begin()
        if self.fp.last == b"":
            raise http.client.RemoteDisconnected("the receiver closed the connection within its headers")


class _LastLine:
    """A response's file that remembers the last line read (the headers end with an empty one)."""

    def __init__(self, fp) -> None:
        self._fp = fp
        self.last: bytes | None = None

    def readline(self, *args) -> bytes:
        self.last = self._fp.readline(*args)
        return self.last

    def __getattr__(self, name: str):
        return getattr(self._fp, name)


def _connection(destination: Target, address: str, timeout: float) -> addresses.PinnedHTTPConnection:
    connection = addresses.pinned_connection(destination, address, timeout)
    connection.response_class = _CompleteResponse
    return connection
