"""One delivery attempt: resolve, check, connect to the checked address, POST the signed body.

A 2xx ends the delivery; a refused URL fails it at once; anything else (a connection error, no
answer within WEBHOOK_TIMEOUT, another status, a redirect: never followed) retries it after the
next of WEBHOOK_RETRY_DELAYS (jittered), then fails it. Attempts run in the webhooks worker only.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import random
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from factorize_app import jobs
from factorize_app.webhooks.signing import receiver_secret, signed_headers
from factorize_app.webhooks.urls import Target, WebhookRefused, checked_address, origin, target

logger = logging.getLogger("factorize_app.webhooks")

USER_AGENT = "factorize-webhooks/1"
# A receiver whose attempt failed shares the failing receivers' half of the threads this long.
FAILING_MARK = 300.0
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

    def __init__(self, connection: http.client.HTTPConnection, seconds: float) -> None:
        self._connection = connection
        self.fired = threading.Event()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired.set()
        sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # wakes the blocked read (TLS too)

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


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """http.client, connecting to the address checked rather than looking the host up again."""

    response_class = _CompleteResponse

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


def _connection(destination: Target, address: str, timeout: float) -> http.client.HTTPConnection:
    kind = _PinnedHTTPSConnection if destination.scheme == "https" else _PinnedHTTPConnection
    return kind(destination, address, timeout)


class AttemptPool:
    """Up to WEBHOOK_CONCURRENCY attempts at once, in threads of the webhooks worker, so a slow
    receiver holds one thread (for at most WEBHOOK_TIMEOUT), never the others. The worker
    reserves a free thread before it takes a delivery from the queue: while all are busy, the
    deliveries wait in Redis (where a restart finds them), not in this process.

    No receiver (scheme, host, port) holds more than WEBHOOK_CONCURRENCY_PER_RECEIVER threads, no
    client's deliveries more than WEBHOOK_CONCURRENCY_PER_CLIENT, and receivers whose last attempt
    failed (slow, down) no more than half the threads together: a delivery over its share is put
    back (due again in a second, no attempt spent) and the thread serves the next one, so one
    client's dripping receivers cannot hold the threads another client's healthy receiver needs."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._slots = threading.BoundedSemaphore(size)
        self._reserved = threading.Event()
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        self._receivers: dict[str, int] = {}
        self._clients: dict[str, int] = {}
        self._failing: dict[str, float] = {}  # receiver -> when its mark ends (monotonic)
        self._failing_busy = 0
        self._counted_failing: dict[str, bool] = {}

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
            delivery = jobs.claim_delivery(delivery_id=delivery_id, token=token, admit=self._admits)
        except BaseException:
            self._slots.release()
            raise
        if delivery is None:
            self._slots.release()
            return
        self._take(delivery)
        self._executor.submit(self._run, delivery)

    def _admits(self, url: str, owner: str) -> bool:
        """Whether this delivery is within its receiver's, its client's and failing receivers' shares."""
        receiver = origin(url)
        with self._lock:
            failing = self._failing.get(receiver, 0) > time.monotonic()
            return (
                self._receivers.get(receiver, 0) < max(1, settings.WEBHOOK_CONCURRENCY_PER_RECEIVER)
                and self._clients.get(owner, 0) < max(1, settings.WEBHOOK_CONCURRENCY_PER_CLIENT)
                and not (failing and self._failing_busy >= max(1, self._size // 2))
            )

    def _take(self, delivery: jobs.Delivery, sign: int = 1) -> None:
        receiver = origin(delivery.url)
        with self._lock:
            self._receivers[receiver] = self._receivers.get(receiver, 0) + sign
            self._clients[delivery.owner] = self._clients.get(delivery.owner, 0) + sign
            if sign > 0:
                delivery_failing = self._failing.get(receiver, 0) > time.monotonic()
                self._failing_busy += delivery_failing
                self._counted_failing[delivery.delivery_id] = delivery_failing
            else:
                self._failing_busy -= self._counted_failing.pop(delivery.delivery_id, False)
            for counts, name in ((self._receivers, receiver), (self._clients, delivery.owner)):
                if counts[name] <= 0:
                    del counts[name]

    def _run(self, delivery: jobs.Delivery) -> None:
        outcome = None
        try:
            outcome = attempt(delivery)
        except Exception:  # noqa: BLE001 (a Redis outage: the attempt's lease ends and it is queued again)
            logger.exception("webhook attempt not recorded", extra={"webhook_id": delivery.delivery_id})
        finally:
            receiver = origin(delivery.url)
            with self._lock:
                if outcome == "delivered":
                    self._failing.pop(receiver, None)
                elif outcome is not None:
                    now = time.monotonic()
                    if len(self._failing) > 10000:  # forget marks that ended
                        self._failing = {name: until for name, until in self._failing.items() if until > now}
                    self._failing[receiver] = now + FAILING_MARK
            self._take(delivery, -1)
            self._slots.release()

    def shutdown(self) -> None:
        """Wait for the attempts under way (each ends by its deadline)."""
        if self._reserved.is_set():
            self._reserved.clear()
            self._slots.release()
        self._executor.shutdown(wait=True)


_pool: AttemptPool | None = None


def use_pool(pool: AttemptPool | None) -> None:
    """Run this process's deliveries in `pool` (the webhooks worker's), or inline (None)."""
    global _pool
    _pool = pool
