"""Delivery attempts in the webhooks worker: the carrier job of a delivery, one attempt (sent,
then recorded), and the pool of threads that runs them.

A 2xx ends the delivery; a refused URL fails it at once; anything else (a connection error, no
answer within WEBHOOK_TIMEOUT, another status, a redirect: never followed) retries it after the
next of WEBHOOK_RETRY_DELAYS (jittered), then fails it. Attempts run in the webhooks worker only.
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from factorize_app.webhooks import deliveries
from factorize_app.webhooks.deliveries import DELIVERED, Delivery
from factorize_app.webhooks.sending import post
from factorize_app.webhooks.targets import WebhookRefused, origin

logger = logging.getLogger("factorize_app.webhooks")

# A receiver whose attempt failed shares the failing receivers' half of the threads this long.
FAILING_MARK = 300.0
JITTER = 0.2  # each delay is drawn from +-20 % of its setting, so failed receivers are not hit in step


def deliver(delivery_id: str, token: int) -> None:
    """The RQ job of a delivery (queue `webhooks`): claim an attempt and send it, in the worker's
    pool when it has one (this returns once the attempt started), else here."""
    if _pool is not None:
        _pool.submit(delivery_id, token)
        return
    delivery = deliveries.claim(delivery_id=delivery_id, token=token)
    if delivery is not None:
        attempt(delivery)


def attempt(delivery: Delivery) -> str | None:
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
    outcome = deliveries.record_attempt(delivery=delivery, status_code=status_code, error=error, retry_in=retry_in)
    extra = {"webhook_id": delivery.delivery_id, "job_id": delivery.job_id, "event": delivery.event,
             "attempt": delivery.attempts, "outcome": outcome, "status": status_code, "error": error}  # fmt: skip
    logger.log(logging.INFO if outcome == DELIVERED else logging.WARNING, "webhook attempt", extra=extra)
    return outcome


def retry_delay(attempts: int) -> float | None:
    """Seconds until the next attempt after `attempts` failed ones; None: give up."""
    delays = settings.WEBHOOK_RETRY_DELAYS
    if attempts > len(delays):
        return None
    return delays[attempts - 1] * random.uniform(1 - JITTER, 1 + JITTER)


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
            delivery = deliveries.claim(delivery_id=delivery_id, token=token, admit=self._admits)
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

    def _take(self, delivery: Delivery, sign: int = 1) -> None:
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

    def _run(self, delivery: Delivery) -> None:
        outcome = None
        try:
            outcome = attempt(delivery)
        except Exception:  # noqa: BLE001 (a Redis outage: the attempt's lease ends and it is queued again)
            logger.exception("webhook attempt not recorded", extra={"webhook_id": delivery.delivery_id})
        finally:
            receiver = origin(delivery.url)
            with self._lock:
                if outcome == DELIVERED:
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
