"""A copy of the service's Redis database, taken while it runs, and its restore.

Every key of the service's database (RQ's and ours, with the job id key) is copied with DUMP and
its expiry, under CLIENT PAUSE WRITE: writes wait (they are not refused) while the copy is taken,
so the copy is one moment's state, consistent across keys (a job is never half moved from its
queue to a registry). It needs no access to Redis's files, so it works the same on a Compose
volume, a Sentinel master or a managed Redis. RESTORE puts the keys back with their absolute
expiry times; keys that expired since the copy stay gone, as they would have.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import redis

from factorize_app.jobs.connection import redis_connection

FILE = "redis-keys.jsonl"
BATCH = 500  # keys per round trip
# The longest writes wait for the copy: past it, Redis lets them through (the copy then fails).
MAX_PAUSE_MS = 60_000


class RestoreRefused(Exception):
    """The target database is not empty (restore with replace to overwrite its keys)."""


def dump_redis(directory: Path) -> int:
    """Write every key of the service's Redis database to `directory`/FILE; the number of keys."""
    conn = redis_connection()
    count = 0
    path = directory / FILE
    conn.execute_command("CLIENT", "PAUSE", MAX_PAUSE_MS, "WRITE")
    try:
        seconds, micros = conn.time()
        now_ms = seconds * 1000 + micros // 1000
        with path.open("w") as out:
            for batch in _batches(conn.scan_iter(count=BATCH)):
                pipe = conn.pipeline(transaction=False)
                for key in batch:
                    pipe.dump(key)
                    pipe.pttl(key)
                answers = pipe.execute()
                for key, value, pttl in zip(batch, answers[::2], answers[1::2], strict=True):
                    if value is None:  # expired meanwhile
                        continue
                    expires = now_ms + pttl if pttl > 0 else 0
                    out.write(json.dumps({"key": _b64(key), "value": _b64(value), "expires_ms": expires}) + "\n")
                    count += 1
    finally:
        conn.execute_command("CLIENT", "UNPAUSE")
    return count


def restore_redis(directory: Path, *, replace: bool = False) -> int:
    """Put the keys of `directory`/FILE back into the service's Redis database; the number restored."""
    conn = redis_connection()
    if not replace and conn.dbsize():
        raise RestoreRefused(f"the Redis database holds {conn.dbsize()} keys")
    count = 0
    with (directory / FILE).open() as lines:
        for batch in _batches(json.loads(line) for line in lines if line.strip()):
            pipe = conn.pipeline(transaction=False)
            for entry in batch:
                key, value, expires = entry["key"], entry["value"], entry["expires_ms"]
                pipe.restore(
                    base64.b64decode(key), expires, base64.b64decode(value), replace=True, absttl=bool(expires)
                )
            for answer in pipe.execute(raise_on_error=False):
                if isinstance(answer, redis.exceptions.ResponseError):
                    raise answer
                count += 1
    return count


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _batches(items) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
