"""Many inputs through a task type's batch endpoint (`POST /<path>/batch {"items": [...]}`).

Why this shape: the server counts every batch item against the client's submit allowance
(THROTTLE_SUBMIT), and posting an item again is how it is polled, so a client that re-posts
everything that is not done yet spends its allowance on polls and meets the limit again and
again. Here each item is posted once, and its batch request carries `Prefer: wait=N`: the server
holds it until every item of the chunk is done (keeping its queued jobs alive meanwhile), so an
item is posted again only if it is still not done after N seconds. A few chunks are in flight at
once (one thread each), so the queue stays fed while the oldest chunk is held; the rest of the
input waits on the client, not in the service's queue, where it would expire unpolled.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from factorize_client.errors import ClientError, ServiceError
from factorize_client.transport import Transport, describe

BATCH_SIZE = 500  # items per request; the server's MAX_BATCH caps it (a 413 halves it)
IN_FLIGHT = 4  # chunks held at once: well under the server's MAX_HELD_PER_CLIENT (32)
MIN_ROUND = 1.0  # seconds: a held request that came back at once with nothing done is stretched to this

OnAnswer = Callable[[int, dict[str, Any]], None]


def post(transport: Transport, path: str, items: list[Any], wait: int = 0) -> list[dict[str, Any]]:
    """One status body per item, in order. A request the server finds too large (413: too many
    bytes; 400 on `items`: more than its MAX_BATCH), or larger than its whole submit allowance
    (429 again after waiting for a fresh window), is halved; the first two teach every thread of
    the client the size to keep under."""
    limit = transport.gate.max_batch
    if limit is not None and len(items) > limit:
        return post(transport, path, items[:limit], wait) + post(transport, path, items[limit:])
    try:
        response = transport.request(
            "POST", f"{path}/batch", json={"items": items}, wait=wait, split_after=2 if len(items) > 1 else None
        )
    except ServiceError as exc:
        too_large = exc.status == 413 or (
            exc.status == 400 and isinstance(exc.body, dict) and set(exc.body) == {"items"}
        )
        if len(items) > 1 and (too_large or exc.status == 429):
            half = len(items) // 2
            if too_large:
                transport.gate.max_batch = min(half, transport.gate.max_batch or half)
            return post(transport, path, items[:half], wait) + post(transport, path, items[half:])
        raise
    try:
        results = response.json()["results"]
    except (ValueError, KeyError, TypeError):
        raise ClientError(f"unexpected answer from {path}/batch: {describe(response)}") from None
    if not isinstance(results, list) or len(results) != len(items) or not all(isinstance(r, dict) for r in results):
        raise ClientError(f"unexpected answer from {path}/batch: not {len(items)} status objects")
    return results


def submit(transport: Transport, path: str, items: Sequence[Any], batch_size: int = BATCH_SIZE) -> list[dict[str, Any]]:
    """Each item posted once, a chunk per request, without waiting for any: their status bodies."""
    bodies: list[dict[str, Any]] = []
    for start in range(0, len(items), batch_size):
        bodies.extend(post(transport, path, list(items[start : start + batch_size])))
    return bodies


def chunk_size(total: int, batch_size: int, in_flight: int) -> int:
    """Small enough that the in-flight chunks are a fraction of the input (so the results, and a
    progress bar, come in many steps), at most `batch_size`."""
    return max(1, min(batch_size, math.ceil(total / (in_flight * 4))))


class Runner:
    """Submits `items` and waits until every one is done; `run()` answers their final status
    bodies in order and calls `on_done(index, body)` (one call at a time) as each is done."""

    def __init__(
        self,
        transport: Transport,
        path: str,
        items: list[Any],
        *,
        wait: int,
        batch_size: int = BATCH_SIZE,
        in_flight: int = IN_FLIGHT,
        on_done: OnAnswer | None = None,
    ):
        self.transport = transport
        self.path = path
        self.items = items
        self.wait = wait
        self.on_done = on_done
        size = chunk_size(len(items), batch_size, in_flight)
        self.chunks = deque(list(range(start, min(start + size, len(items)))) for start in range(0, len(items), size))
        self.threads = min(in_flight, len(self.chunks))
        self.results: list[dict[str, Any] | None] = [None] * len(items)
        self.count = 0
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.failure: BaseException | None = None

    @property
    def done(self) -> int:
        return self.count

    def run(self) -> list[dict[str, Any]]:
        if not self.items:
            return []
        for _ in range(self.threads):  # daemons: a run that times out leaves nothing to join
            threading.Thread(target=self.work, args=(self.transport.clone(),), daemon=True).start()
        while not self.wake.is_set():
            self.wake.wait(min(1.0, self.transport.remaining()))  # raises OutOfTime at the deadline
        if self.failure is not None:
            raise self.failure
        return [body for body in self.results if body is not None]

    def work(self, transport: Transport) -> None:
        try:
            while True:
                with self.lock:
                    if not self.chunks or self.failure is not None:
                        return
                    pending = self.chunks.popleft()
                while pending:
                    started = time.monotonic()
                    answers = post(transport, self.path, [self.items[i] for i in pending], self.wait)
                    still = [i for i, answer in zip(pending, answers, strict=True) if not self.record(i, answer)]
                    idle = time.monotonic() - started
                    if still and len(still) == len(pending) and idle < MIN_ROUND:
                        transport.sleep(MIN_ROUND - idle)  # the server did not hold: never a busy loop
                    pending = still
        except BaseException as exc:  # handed to run(), in the caller's thread
            with self.lock:
                self.failure = self.failure or exc
            self.wake.set()

    def record(self, index: int, answer: dict[str, Any]) -> bool:
        """Keep a done item's answer and report it; False for an item not done yet."""
        if not answer.get("done"):
            return False
        with self.lock:
            self.results[index] = answer
            self.count += 1
            if self.on_done is not None:
                self.on_done(index, answer)
            if self.count == len(self.items):
                self.wake.set()
        return True
