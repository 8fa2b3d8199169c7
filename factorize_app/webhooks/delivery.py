"""One delivery attempt: resolve, check, connect to the checked address, POST the signed body.

A 2xx ends the delivery; a refused URL fails it at once; anything else (a connection error, no
answer within WEBHOOK_TIMEOUT, another status, a redirect: never followed) retries it after the
next of WEBHOOK_RETRY_DELAYS (jittered), then fails it. Attempts run in the webhooks worker only.
"""

from __future__ import annotations

import http.client
import logging
import random
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from factorize_app import jobs
from factorize_app.webhooks.signing import signed_headers
from factorize_app.webhooks.urls import Target, WebhookRefused, checked_address, target

logger = logging.getLogger("factorize_app.webhooks")

USER_AGENT = "factorize-webhooks/1"
JITTER = 0.2  # each delay is drawn from +-20 % of its setting, so failed receivers are not hit in step


def deliver(delivery_id: str, token: int) -> None:
    """The RQ job of a delivery (queue `webhooks`): claim an attempt and send it, in the worker's
    pool when it has one (this returns once the attempt started), else here."""
    if _pool is not None:
        _pool.submit(delivery_id, token)
        return
    delivery = jobs.claim_delivery(delivery_id=delivery_id, token=token)
    if delivery is not None:
        attempt(delivery)


def attempt(delivery: jobs.Delivery) -> str | None:
    """Send one attempt and record its answer; the outcome (delivered, retried, failed)."""
    status_code, error, refused = None, None, False
    try:
        status_code = post(delivery)
        if not 200 <= status_code < 300:
            error = f"answered {status_code}"
    except WebhookRefused as exc:
        error, refused = f"refused: {exc}", True
    except (OSError, http.client.HTTPException) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    retry_in = None if refused else retry_delay(delivery.attempts)
    outcome = jobs.record_delivery_attempt(delivery=delivery, status_code=status_code, error=error, retry_in=retry_in)
    extra = {"webhook_id": delivery.delivery_id, "job_id": delivery.job_id, "event": delivery.event,
             "attempt": delivery.attempts, "outcome": outcome, "status": status_code, "error": error}  # fmt: skip
    logger.log(logging.INFO if outcome == "delivered" else logging.WARNING, "webhook attempt", extra=extra)
    return outcome


def retry_delay(attempts: int) -> float | None:
    """Seconds until the next attempt after `attempts` failed ones; None: give up."""
    delays = settings.WEBHOOK_RETRY_DELAYS
    if attempts > len(delays):
        return None
    return delays[attempts - 1] * random.uniform(1 - JITTER, 1 + JITTER)


def post(delivery: jobs.Delivery) -> int:
    """POST the delivery to its URL (checked again: the settings may have changed since the
    submit) at the address checked, within WEBHOOK_TIMEOUT; the answer's status code."""
    destination = target(delivery.url)
    address = checked_address(destination)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **signed_headers(webhook_id=delivery.delivery_id, body=delivery.body),
    }
    connection = _connection(destination, address)
    try:
        connection.request("POST", destination.path, body=delivery.body.encode(), headers=headers)
        response = connection.getresponse()
        response.read(65536)  # a little of the answer, so the receiver is not cut off mid-write
        return response.status
    finally:
        connection.close()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """http.client, connecting to the address checked rather than looking the host up again."""

    def __init__(self, destination: Target, address: str, timeout: float) -> None:
        super().__init__(destination.host, destination.port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """The same over TLS: the certificate is verified against the URL's host name."""

    default_port = http.client.HTTPS_PORT

    def connect(self) -> None:
        super().connect()
        self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.host)


def _connection(destination: Target, address: str) -> http.client.HTTPConnection:
    kind = _PinnedHTTPSConnection if destination.scheme == "https" else _PinnedHTTPConnection
    return kind(destination, address, settings.WEBHOOK_TIMEOUT)


class AttemptPool:
    """Up to WEBHOOK_CONCURRENCY attempts at once, in threads of the webhooks worker, so a slow
    receiver holds one thread (for at most WEBHOOK_TIMEOUT per step), never the others. The worker
    reserves a free thread before it takes a delivery from the queue: while all are busy, the
    deliveries wait in Redis (where a restart finds them), not in this process."""

    def __init__(self, size: int) -> None:
        self._slots = threading.BoundedSemaphore(size)
        self._reserved = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="webhook")

    def reserve(self, timeout: float) -> bool:
        """Hold a free thread for the next delivery (at most `timeout` s of waiting for one)."""
        if self._reserved.is_set():
            return True
        if self._slots.acquire(timeout=timeout):
            self._reserved.set()
            return True
        return False

    def submit(self, delivery_id: str, token: int) -> None:
        if not self.reserve(timeout=settings.WEBHOOK_TIMEOUT * 3):
            raise RuntimeError("no free delivery thread")  # the carrier fails; the delivery stays due
        self._reserved.clear()
        try:
            delivery = jobs.claim_delivery(delivery_id=delivery_id, token=token)
        except BaseException:
            self._slots.release()
            raise
        if delivery is None:
            self._slots.release()
            return
        self._executor.submit(self._run, delivery)

    def _run(self, delivery: jobs.Delivery) -> None:
        try:
            attempt(delivery)
        except Exception:  # noqa: BLE001 (a Redis outage: the attempt's lease ends and it is queued again)
            logger.exception("webhook attempt not recorded", extra={"webhook_id": delivery.delivery_id})
        finally:
            self._slots.release()

    def shutdown(self) -> None:
        """Wait for the attempts under way (each ends within its timeouts)."""
        if self._reserved.is_set():
            self._reserved.clear()
            self._slots.release()
        self._executor.shutdown(wait=True)


_pool: AttemptPool | None = None


def use_pool(pool: AttemptPool | None) -> None:
    """Run this process's deliveries in `pool` (the webhooks worker's), or inline (None)."""
    global _pool
    _pool = pool
