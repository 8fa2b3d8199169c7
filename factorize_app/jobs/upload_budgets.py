"""The disk that uploads (POST /files) may take: per client (UPLOAD_CLIENT_BYTES) and all
clients together (UPLOAD_TOTAL_BYTES), counted in Redis for as long as the uploads live.

As the Redis budgets (jobs/budgets.py) do, the bytes are counted in one counter per expiry slot
(a 32nd of UPLOAD_TTL), per client and in total; each counter expires with Redis's EXPIREAT once
every upload charged to it has, so an upload's bytes come back when its record expires, with no
sweep. An upload is charged its declared length before its first byte is read (the same atomic
script as the Redis budgets: concurrent uploads cannot pass a budget together), then its real
size once stored, or nothing if it was refused or cut short. The same bytes uploaded twice count
twice (stored once): the budget errs towards refusing and says nothing about others' files.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from factorize_app.jobs import keys, scripts
from factorize_app.jobs.connection import redis_connection
from factorize_app.jobs.errors import ClientLimitExceeded, translate_outages

SLOTS = 32
CLIENT_LIMIT, TOTAL_LIMIT = "UPLOAD_CLIENT_BYTES", "UPLOAD_TOTAL_BYTES"


class UploadBudgetExceeded(ClientLimitExceeded):
    """The client's live uploads would pass UPLOAD_CLIENT_BYTES (a 429 naming it)."""

    def __init__(self, *, budget: int, held: int, needed: int, retry_after: int) -> None:
        Exception.__init__(
            self,
            f"over {CLIENT_LIMIT}: this client's live uploads may hold at most {budget} bytes; they hold "
            f"{held}, and this upload may add {needed}. Room comes back as they expire (UPLOAD_TTL)",
        )
        self.limit, self.cap, self.retry_after = CLIENT_LIMIT, budget, retry_after
        self.details = {"held": held, "needed": needed}


class FileStorageFull(Exception):
    """All clients' live uploads would pass UPLOAD_TOTAL_BYTES (a 507 naming it)."""

    def __init__(self, *, budget: int, held: int, needed: int, retry_after: int) -> None:
        super().__init__(
            f"over {TOTAL_LIMIT}: live uploads may hold at most {budget} bytes in all; they hold {held}, and "
            f"this upload may add {needed}. Room comes back as they expire (UPLOAD_TTL)"
        )
        self.limit, self.cap, self.held, self.needed, self.retry_after = TOTAL_LIMIT, budget, held, needed, retry_after


@dataclass(frozen=True)
class UploadCharge:
    """What an upload was charged: `amount` bytes in expiry slot `slot` (of `width` seconds)."""

    client: str
    amount: int
    slot: int
    width: int


def _width(ttl: int) -> int:
    return max(1, math.ceil(ttl / SLOTS))


def _window(width: int, now: float) -> range:
    first = int(now // width)
    return range(first, first + SLOTS + 3)


def _charge(slot_keys: list[str], *, amount: int, budget: int, target: int, width: int) -> tuple[bool, int, int]:
    """Charge `amount` to the slot `target` (its number) of `slot_keys`, the window from now; or
    refuse. (charged, bytes held, seconds until room comes back)."""
    first = int(time.time() // width)
    reply = scripts.BUDGET.on_thread(
        slots=slot_keys, charge=amount, budget=budget, target=target - first + 1, expires=target * width
    )
    if int(reply[0]) == 1:
        return True, int(reply[1]), 0
    held, earliest = int(reply[1]), int(reply[2])
    retry_after = max(1, math.ceil((first + earliest - 1) * width - time.time())) if earliest else 1
    return False, held, retry_after


@translate_outages
def reserve_upload(*, client: str, size: int) -> UploadCharge:
    """Charge an upload of at most `size` bytes to `client` and to the total, until UPLOAD_TTL
    from now; UploadBudgetExceeded or FileStorageFull (nothing charged) when it does not fit."""
    width = _width(settings.UPLOAD_TTL)
    now = time.time()
    target = math.ceil((now + settings.UPLOAD_TTL) / width)
    window = _window(width, now)
    charge = UploadCharge(client=client or "anonymous", amount=size, slot=target, width=width)
    client_budget, total_budget = settings.UPLOAD_CLIENT_BYTES, settings.UPLOAD_TOTAL_BYTES
    if client_budget > 0:
        slot_keys = [keys.upload_bytes(charge.client, slot) for slot in window]
        fits, held, retry_after = _charge(slot_keys, amount=size, budget=client_budget, target=target, width=width)
        if not fits:
            raise UploadBudgetExceeded(budget=client_budget, held=held, needed=size, retry_after=retry_after)
    if total_budget > 0:
        slot_keys = [keys.upload_total(slot) for slot in window]
        fits, held, retry_after = _charge(slot_keys, amount=size, budget=total_budget, target=target, width=width)
        if not fits:
            if client_budget > 0:
                redis_connection().decrby(keys.upload_bytes(charge.client, target), size)
            raise FileStorageFull(budget=total_budget, held=held, needed=size, retry_after=retry_after)
    return charge


def _counters(client: str) -> list[Callable[[int], str]]:
    """The slot keys (by slot number) of the budgets in force: the client's, the total."""
    counters: list[Callable[[int], str]] = []
    if settings.UPLOAD_CLIENT_BYTES > 0:
        counters.append(functools.partial(keys.upload_bytes, client))
    if settings.UPLOAD_TOTAL_BYTES > 0:
        counters.append(keys.upload_total)
    return counters


@translate_outages
def settle_upload(charge: UploadCharge, *, size: int, expires_at: float) -> None:
    """The upload is stored: charge its real `size` until its record expires, instead of the reservation."""
    slot = math.ceil(expires_at / charge.width)
    if slot == charge.slot and size == charge.amount:
        return
    pipe = redis_connection().pipeline(transaction=True)
    for counter in _counters(charge.client):
        pipe.decrby(counter(charge.slot), charge.amount)
        pipe.incrby(counter(slot), size)
        pipe.expireat(counter(slot), slot * charge.width)
    pipe.execute()


@translate_outages
def release_upload(charge: UploadCharge) -> None:
    """Nothing was stored (refused, cut short, failed): take the reservation back."""
    pipe = redis_connection().pipeline(transaction=True)
    for counter in _counters(charge.client):
        pipe.decrby(counter(charge.slot), charge.amount)
    pipe.execute()


@translate_outages
def uploaded_bytes(*, client: str | None = None) -> int:
    """Bytes of live uploads: the client's, or (None) all clients'."""
    width = _width(settings.UPLOAD_TTL)
    window = _window(width, time.time())
    counter = keys.upload_total if client is None else functools.partial(keys.upload_bytes, client or "anonymous")
    slot_keys = [counter(slot) for slot in window]
    return sum(int(value or 0) for value in redis_connection().mget(slot_keys))
