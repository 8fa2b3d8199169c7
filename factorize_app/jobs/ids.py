"""Job ids and inputs: one id per (task type, validated input), and the input read back.

The id is the type's name and a keyed digest (HMAC-SHA256) of the canonical JSON of the input:
the same input gives the same id within a deployment, the basis of dedup and of polling by
resubmitting, but no one without the server's key can compute the id of a guessed input (and so
learn whether someone submitted it, or read its result). A job's input is kept in its RQ
description ("<type> <canonical JSON>"), and is only believed when it digests to the id.

The key is JOB_ID_KEY when set; else the deployment's own, kept in Redis beside the jobs it names
(`keys.JOB_ID_KEY`), apart from SECRET_KEY, so that rotating SECRET_KEY orphans no job. The first
process to need it stores it (SET NX; every other adopts the stored one): a random key on a fresh
Redis, or, on a Redis that already holds jobs (a deployment upgraded from the versions whose ids
derived from SECRET_KEY), the key derived from SECRET_KEY, so that those jobs keep their ids.
Each process caches it and reads it again every few seconds, storing its own back if the key is
gone (a flushed, evicted or failed-over Redis), so that every process keeps naming jobs alike.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from typing import Any

import redis
from django.conf import settings

from factorize_app.jobs import keys
from factorize_app.jobs.connection import redis_connection
from factorize_app.jobs.errors import JobNotFound
from factorize_app.tasks import TaskType, UnknownTaskType, get_task_type

_JOB_ID = re.compile(r"^(?P<task>[A-Za-z0-9_]+)-(?P<digest>[0-9a-f]{32})$")


def canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def job_id_for(task_type: TaskType, data: dict[str, Any]) -> str:
    """Same type and same validated input, same id: the basis of dedup and polling."""
    key = settings.JOB_ID_KEY.encode() if settings.JOB_ID_KEY else _stored.key()
    if task_type.file_fields:  # a file's name is the client's, not its content: the same bytes, the same job
        data = {k: _nameless(v) if k in task_type.file_fields else v for k, v in data.items()}
    digest = hmac.new(key, canonical(data).encode(), hashlib.sha256)
    return f"{task_type.name}-{digest.hexdigest()[:32]}"


def _nameless(stored: Any) -> Any:
    return {k: v for k, v in stored.items() if k != "name"} if isinstance(stored, dict) else stored


@functools.lru_cache(maxsize=4)
def legacy_key(secret_key: str) -> bytes:
    """The key of the ids made before the key was stored: derived from SECRET_KEY (never
    SECRET_KEY itself, which signs sessions: a digest made with it must not be reusable elsewhere)."""
    return hashlib.sha256(b"factorize_app.jobs.ids:" + secret_key.encode()).digest()


log = logging.getLogger(__name__)
# How often a process reads the stored key again (and stores its own back when it is gone).
RECHECK_SECONDS = 2


class _StoredKey:
    """The deployment's id key, as stored in Redis, cached in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: bytes | None = None
        self._checked = 0.0

    def key(self) -> bytes:
        key = self._key
        if key is not None and time.monotonic() - self._checked < RECHECK_SECONDS:
            return key
        with self._lock:
            if self._key is not None and time.monotonic() - self._checked < RECHECK_SECONDS:
                return self._key
            try:
                self._key = self._load(self._key)
            except redis.exceptions.RedisError:
                if self._key is None:  # nothing to name jobs with: the caller answers the outage
                    raise
                # Keep the cached key through an outage; check again at the next use.
            self._checked = time.monotonic()
            return self._key

    def keep(self, pipe: redis.client.Pipeline) -> None:
        """Store the key this process names jobs with, unless one is stored, in the transaction that
        enqueues them: a job in Redis always has its key there (even right after a flush)."""
        if not settings.JOB_ID_KEY and self._key is not None:
            pipe.set(keys.JOB_ID_KEY, self._key.hex(), nx=True)

    def forget(self) -> None:
        """Read the stored key again at the next use (tests, and `manage.py` commands)."""
        with self._lock:
            self._key, self._checked = None, 0.0

    @staticmethod
    def _load(cached: bytes | None) -> bytes:
        conn = redis_connection()
        stored = conn.get(keys.JOB_ID_KEY)
        if stored is None:
            stored = _store(conn, cached)
        return bytes.fromhex(stored.decode())

    def __repr__(self) -> str:  # never the key itself in a traceback or a log
        return "<job id key>"


def _store(conn: redis.Redis, cached: bytes | None) -> bytes:
    """Store a key where none is: this process's own if it had one (the Redis lost it: the ids it
    hands out stay valid), else the legacy key if the Redis holds jobs, else a new random one.
    The first process to store wins; every other adopts its key."""
    if cached is not None:
        candidate, why = cached, "the key this process used (the stored one was gone)"
    elif _holds_jobs(conn):
        candidate, why = legacy_key(settings.SECRET_KEY), "derived from SECRET_KEY: this Redis holds jobs named with it"
    else:
        candidate, why = secrets.token_bytes(32), "a new random key"
    if conn.set(keys.JOB_ID_KEY, candidate.hex(), nx=True):
        log.info("Stored the job id key in Redis (%s): %s", keys.JOB_ID_KEY, why)
        if candidate == legacy_key(settings.INSECURE_DEV_SECRET_KEY):
            log.warning(
                "The job id key derives from the public development SECRET_KEY: anyone can compute job ids. "
                "Delete %s to make a new one (existing jobs then answer 404).",
                keys.JOB_ID_KEY,
            )
        return candidate.hex().encode()
    return conn.get(keys.JOB_ID_KEY) or candidate.hex().encode()


def _holds_jobs(conn: redis.Redis) -> bool:
    """Whether this Redis already serves the job service (an upgrade from keys derived from SECRET_KEY)."""
    for _ in conn.scan_iter(match=keys.JOB_PREFIX + "*", count=1000):
        return True
    return False


_stored = _StoredKey()
keep_stored_key = _stored.keep
forget_stored_key = _stored.forget


def description_for(task_type: TaskType, data: dict[str, Any]) -> str:
    """The job's RQ description: its input, for polls and the dashboard."""
    return f"{task_type.name} {canonical(data)}"


def input_of(task_type: TaskType, job_id: str, description: str) -> dict[str, Any] | None:
    """The validated input a job was submitted with, if the job is really this type's job."""
    name, _, text = description.partition(" ")
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if name != task_type.name or not isinstance(data, dict) or job_id_for(task_type, data) != job_id:
        return None
    return data


def queued_input(data: dict[str, Any], client: str) -> str:
    """What re-enqueues a job lost in an outage: its client (no spaces) and its input."""
    return f"{client.replace(' ', '_')} {canonical(data)}"


def task_type_of(job_id: str) -> TaskType:
    match = _JOB_ID.match(job_id)
    if match is None:
        raise JobNotFound(job_id)
    try:
        return get_task_type(match["task"])
    except UnknownTaskType:
        raise JobNotFound(job_id) from None
