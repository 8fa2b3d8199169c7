"""Jobs' files: inputs uploaded or given inline, outputs too large for Redis. Redis keeps references.

The bytes live in Django's storage named JOB_FILES_STORAGE (a directory by default, shared by the
web and the workers; S3-compatible object storage through django-storages beyond one machine),
content-addressed: `blobs/<sha256>`, so the same bytes are stored once and are the same input (a
job's input holds the digest, and its id derives from the input). A client names a file by a
random id (`file_<hex>`): knowing some bytes' digest gives no access to them.

Each blob is kept until the latest expiry of anything that refers to it (an upload's TTL, a queued
job's TTL, a result's), tracked in one sorted set; `remove_expired` deletes the blobs past it.
Uploads stream through a bounded temporary file while their digest is computed: never whole in
memory, never over the limit on disk. A storage that fails (disk full, a bucket that does not
answer) is `StorageUnavailable`, for a 503 that names it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import shutil
import tempfile
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import redis
from django.conf import settings
from django.core.files import File
from django.core.files.storage import storages

from factorize_app.jobs import keys
from factorize_app.jobs.connection import redis_connection
from factorize_app.jobs.control import is_owner
from factorize_app.jobs.errors import translate_outages

BLOB_PREFIX = "blobs/"
ID_PREFIX = "file_"
_ID_HEX = 32
REMOVE_BATCH = 100
DELETION_STALE = 60  # seconds: no storage takes this long to delete one object


class StorageUnavailable(Exception):
    """The file storage failed (disk full, unreachable); the message names it, for a 503."""


class FileTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"a file may hold at most {limit} bytes")
        self.limit = limit


class FileNotFound(LookupError):
    """No such file id, or it expired, or the caller may not read it."""


@dataclass(frozen=True)
class StoredFile:
    id: str
    sha256: str
    size: int
    content_type: str
    name: str
    owner: str  # the client that uploaded it, or '' for a job's output (its job's owners read it)
    job_id: str  # the job whose output it is, or ''
    expires_at: float


def _storage():
    return storages[settings.JOB_FILES_STORAGE]


def blob_name(sha256: str) -> str:
    return BLOB_PREFIX + sha256


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """Any failure of the storage backend is an outage of it, never a 500."""
    try:
        yield
    except (FileTooLarge, FileNotFound):
        raise
    except Exception as error:  # noqa: BLE001 (backends raise OSError, botocore's, their own)
        raise StorageUnavailable(f"the file storage failed: {type(error).__name__}: {error}") from None


class Upload:
    """Bytes arriving piece by piece (an HTTP upload's parser pushes them): written to a bounded
    temporary file while their digest is computed, then `finish` saves them and a record naming
    them; leaving the `with` block without `finish` (too large, a disconnect, any error) keeps
    nothing."""

    HEAD_BYTES = 16  # kept for content checks (magic numbers)

    def __init__(self, *, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.head = b""
        self._digest = hashlib.sha256()
        with _storage_errors():
            self._spool = tempfile.TemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR)  # noqa: SIM115 (closed in __exit__)

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc_info) -> None:
        self._spool.close()

    def write(self, chunk: bytes) -> None:
        """Take the next piece; FileTooLarge once past `max_bytes` (nothing over it reaches the disk)."""
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise FileTooLarge(self.max_bytes)
        if len(self.head) < self.HEAD_BYTES:
            self.head += chunk[: self.HEAD_BYTES - len(self.head)]
        self._digest.update(chunk)
        with _storage_errors():
            self._spool.write(chunk)

    @translate_outages
    def finish(self, *, content_type: str, name: str, owner: str, job_id: str = "", ttl: int) -> StoredFile:
        """Save the bytes written (once per digest) and a record naming them, live for `ttl` s."""
        sha256 = self._digest.hexdigest()
        expires_at = time.time() + ttl
        keep_blob(sha256=sha256, until=expires_at)  # first: from now on no sweep claims these bytes
        _wait_for_deletion(sha256)  # ...but one that claimed them before may be deleting them now
        with _storage_errors():
            self._spool.seek(0)
            storage = _storage()
            if not storage.exists(blob_name(sha256)):
                saved = storage.save(blob_name(sha256), File(self._spool))
                if saved != blob_name(sha256):  # a racing writer of the same bytes got the name first
                    storage.delete(saved)
        stored = StoredFile(
            id=ID_PREFIX + secrets.token_hex(_ID_HEX // 2),
            sha256=sha256,
            size=self.size,
            content_type=content_type,
            name=name,
            owner=owner,
            job_id=job_id,
            expires_at=expires_at,
        )
        _record(stored, ttl)
        return stored


@translate_outages
def store(
    *, chunks: Iterable[bytes], content_type: str, name: str, owner: str, job_id: str = "", ttl: int, max_bytes: int
) -> StoredFile:
    """Save the bytes (at most `max_bytes`, FileTooLarge past them) and a record naming them."""
    with Upload(max_bytes=max_bytes) as upload:
        for chunk in chunks:  # a client's upload: its own errors (a disconnect) are not the storage's
            upload.write(chunk)
        return upload.finish(content_type=content_type, name=name, owner=owner, job_id=job_id, ttl=ttl)


def _record(stored: StoredFile, ttl: int) -> None:
    fields = {
        "sha256": stored.sha256,
        "size": stored.size,
        "content_type": stored.content_type,
        "name": stored.name,
        "owner": stored.owner,
        "job_id": stored.job_id,
        "expires_at": stored.expires_at,
    }
    pipe = redis_connection().pipeline(transaction=True)
    pipe.hset(keys.file_record(stored.id), mapping=fields)
    pipe.expire(keys.file_record(stored.id), ttl)
    pipe.execute()


def _wait_for_deletion(sha256: str) -> None:
    """Until a sweep deleting these bytes is done; a claim older than DELETION_STALE was left by a
    sweeper that died, and is dropped."""
    connection = redis_connection()
    while (claimed := connection.hget(keys.FILE_DELETING, sha256)) is not None:
        if time.time() - float(claimed) > DELETION_STALE:
            connection.hdel(keys.FILE_DELETING, sha256)
            return
        time.sleep(0.02)


def valid_id(file_id: str) -> bool:
    suffix = file_id[len(ID_PREFIX) :]
    return file_id.startswith(ID_PREFIX) and len(suffix) == _ID_HEX and all(c in "0123456789abcdef" for c in suffix)


@translate_outages
def readable_by(stored: StoredFile, *, client: str) -> bool:
    """Whether `client` (an identity's name) may read the file: its uploader, or for a job's output
    any owner of that job."""
    if not client:
        return False
    if stored.owner:
        return stored.owner == client
    return bool(stored.job_id) and is_owner(job_id=stored.job_id, client=client)


MAX_NAME = 200  # characters of a file's name kept (its extension too, when it has one)
DEFAULT_NAME = "file"
# RFC 6838's type and subtype names (restricted-name): what a Content-Type may say.
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def clean_name(name: str) -> str:
    """A client's file name made safe to keep and to hand back: its last path part, without
    control or format characters, no leading dots, at most MAX_NAME characters (the extension
    kept); DEFAULT_NAME when nothing is left."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in name if unicodedata.category(char)[0] not in "CZ" or char == " ")
    name = name.strip().lstrip(".").strip()
    if len(name) > MAX_NAME:
        stem, dot, extension = name.rpartition(".")
        suffix = f".{extension[:16]}" if dot and stem else ""
        name = name[: MAX_NAME - len(suffix)].rstrip() + suffix
    return name or DEFAULT_NAME


def clean_content_type(declared: str) -> str | None:
    """A declared content type as kept (`type/subtype`, lower case, parameters dropped);
    DEFAULT_CONTENT_TYPE when none was declared, None when it is not a valid one."""
    bare = declared.split(";", 1)[0].strip().lower()
    if not bare:
        return DEFAULT_CONTENT_TYPE
    return bare if _MIME.fullmatch(bare) else None


# The first bytes of the formats whose readers (Pillow, PDF tools) trust them: a file declared as
# one of these must start so. Other types are taken as declared (nosniff and attachment on the way out).
SIGNATURES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),  # ...and WEBP at offset 8
    "image/bmp": (b"BM",),
    "image/tiff": (b"II*\x00", b"MM\x00*"),
    "application/pdf": (b"%PDF-",),
    "application/zip": (b"PK\x03\x04", b"PK\x05\x06"),
    "application/gzip": (b"\x1f\x8b",),
}


def matches_content_type(content_type: str, head: bytes) -> bool:
    """Whether bytes starting with `head` can be of `content_type` (a known format's magic
    number; any bytes for other types)."""
    signatures = SIGNATURES.get(content_type)
    if signatures is None:
        return True
    if content_type == "image/webp" and head[8:12] != b"WEBP":
        return False
    return head.startswith(signatures)


@translate_outages
def lookup(*, file_id: str) -> StoredFile:
    """The record of a live file; FileNotFound for an unknown, malformed or expired id."""
    if not valid_id(file_id):
        raise FileNotFound(file_id)
    fields = redis_connection().hgetall(keys.file_record(file_id))
    if not fields:
        raise FileNotFound(file_id)
    text = {key.decode(): value.decode() for key, value in fields.items()}
    return StoredFile(
        id=file_id,
        sha256=text["sha256"],
        size=int(text["size"]),
        content_type=text["content_type"],
        name=text["name"],
        owner=text["owner"],
        job_id=text["job_id"],
        expires_at=float(text["expires_at"]),
    )


@translate_outages
def keep_blob(*, sha256: str, until: float) -> None:
    """A queued job or a result refers to these bytes: keep them at least until then."""
    redis_connection().zadd(keys.FILE_BLOBS, {sha256: until}, gt=True)  # GT adds a new member too


def open_blob(*, sha256: str) -> IO[bytes]:
    """The stored bytes, for reading in chunks (a response streams them, a handler reads them)."""
    with _storage_errors():
        try:
            return _storage().open(blob_name(sha256), "rb")
        except FileNotFoundError:
            raise FileNotFound(sha256) from None


@contextlib.contextmanager
def local_path(*, sha256: str) -> Iterator[Path]:
    """A path on this machine holding the bytes, for a handler: the stored file itself when the
    storage is a directory, else a temporary copy removed afterwards."""
    storage = _storage()
    with _storage_errors():
        try:
            path = Path(storage.path(blob_name(sha256)))
        except NotImplementedError:  # object storage: no local path
            path = None
        if path is not None:
            if not path.exists():
                raise FileNotFound(sha256)
            yield path
            return
        with tempfile.NamedTemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR) as copy:
            with open_blob(sha256=sha256) as source:
                shutil.copyfileobj(source, copy)
            copy.flush()
            yield Path(copy.name)


@translate_outages
def remove_expired(*, now: float | None = None, deadline: float | None = None) -> int:
    """Delete the blobs nothing refers to any more (at most REMOVE_BATCH, and none started after
    `deadline`, a time.monotonic(): a slow storage cannot hold the caller). Each is claimed
    atomically (only while its score is still the expired one: a blob re-kept meanwhile stays) and
    marked as being deleted until it is gone, so a store of the same bytes waits and then writes
    them afresh."""
    connection = redis_connection()
    now = time.time() if now is None else now
    expired = connection.zrangebyscore(keys.FILE_BLOBS, "-inf", now, start=0, num=REMOVE_BATCH, withscores=True)
    removed = 0
    for member, score in expired:
        if deadline is not None and time.monotonic() >= deadline:
            break
        if not _claim(connection, member, score):
            continue
        try:
            with _storage_errors():
                _storage().delete(blob_name(member.decode()))
        except StorageUnavailable:
            connection.zadd(keys.FILE_BLOBS, {member: score}, nx=True)  # try again on the next sweep
            raise
        finally:
            connection.hdel(keys.FILE_DELETING, member)
        removed += 1
    return removed


def _claim(connection: redis.Redis, member: bytes, score: float) -> bool:
    with connection.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(keys.FILE_BLOBS)
            if pipe.zscore(keys.FILE_BLOBS, member) != score:
                return False
            pipe.multi()
            pipe.zrem(keys.FILE_BLOBS, member)
            pipe.hset(keys.FILE_DELETING, member, time.time())
            pipe.execute()
            return True
        except redis.WatchError:
            return False
