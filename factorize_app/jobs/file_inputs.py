"""Files in jobs' inputs: what a client named (a data: URI, a URL, an upload) made into stored bytes.

A task type's file fields (tasks/fields.py FileInput) check the form of what the client sent;
here, at submit, the bytes are decoded, fetched (jobs/file_fetch.py) or looked up, their type is
sniffed (an image's from its bytes, with Pillow: a file that claims one type and holds another is
refused, and so is a damaged image or a decompression bomb), the field's own check runs, and
they are stored (jobs/files.py). The input then holds the file's identity, {"sha256", "size",
"content_type", "name"}: the same bytes by any of the three ways are the same job. The bytes are
kept until the job and its result have expired, so a queued job's input is never lost.

On the worker's side (and in sync mode's processes) each file field is a local `pathlib.Path`
while the handler runs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from PIL import Image

from factorize_app.jobs import file_fetch, files
from factorize_app.tasks import TaskType, get_task_type, run_task
from factorize_app.tasks.fields import DATA_URI, STORED_FILE_KEYS, UPLOAD, URL, FileInput, FileReference

MAX_IMAGE_PIXELS = 25_000_000  # 5000x5000: an image's header claiming more is a decompression bomb
# The image formats told by their bytes (each has a signature: Pillow's other readers, TGA's say,
# would take almost any bytes for theirs).
SNIFFED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
GENERIC_TYPES = ("", "application/octet-stream", "binary/octet-stream")
CHUNK = 64 * 1024
STORED_MARGIN = 60  # seconds: bytes this process stored are not stored again while kept this much longer
_UPLOAD_PATH_PREFIX = "/files/"


class FileRefused(Exception):
    """A file field's value cannot be used (the message says why); a 400 naming the field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class FileInputTooLarge(FileRefused):
    """More bytes than the field or FILE_INPUT_MAX_BYTES allows; a 413 naming the limit."""

    def __init__(self, field: str, limit: int):
        super().__init__(field, f"The file holds more than {limit} bytes (FILE_INPUT_MAX_BYTES or the field's limit).")
        self.limit = limit


def resolve(
    *,
    task_type: TaskType,
    data: dict[str, Any],
    client: str,
    own_hosts: tuple[str, ...] = (),
    deadline: float | None = None,
) -> dict:
    """The validated input with each file field's reference replaced by the stored file's
    identity. `client` names who asks (an upload must be readable by it; it owns what is stored
    for it); `own_hosts` are this service's host names, whose `/files/<id>` URLs name uploads;
    `deadline` (time.monotonic()) ends URL fetches sooner than FILE_URL_TIMEOUT each."""
    if not task_type.file_fields:
        return data
    fields = task_type.input_serializer().fields
    resolved = dict(data)
    for name in task_type.file_fields:
        reference = data.get(name)
        if isinstance(reference, FileReference):
            resolved[name] = _resolve_one(task_type, name, fields[name], reference, client, own_hosts, deadline)
    return resolved


def keep_inputs(*, task_type: TaskType, inputs: list[dict[str, Any]]) -> None:
    """Jobs about to be enqueued (a retry's too): their files kept as long as they may need them."""
    until = time.time() + _keep_seconds(task_type)
    for data in inputs:
        for name in task_type.file_fields:
            stored = data.get(name)
            if isinstance(stored, dict) and isinstance(stored.get("sha256"), str):
                files.keep_blob(sha256=stored["sha256"], until=until)


def count(task_type: TaskType, data: dict[str, Any]) -> int:
    """How many files an input names (for FILE_INPUTS_PER_REQUEST)."""
    return sum(isinstance(data.get(name), FileReference) for name in task_type.file_fields)


def _resolve_one(
    task_type: TaskType,
    name: str,
    field: FileInput,
    reference: FileReference,
    client: str,
    own_hosts: tuple[str, ...],
    deadline: float | None,
) -> dict[str, Any]:
    limit = field.max_bytes
    if reference.kind == URL and (upload_id := _own_upload(reference.value, own_hosts)):
        reference = FileReference(UPLOAD, upload_id)
    if reference.kind == UPLOAD:
        return _from_upload(task_type, name, field, reference.value, client, limit)
    with tempfile.NamedTemporaryFile(dir=settings.FILE_UPLOAD_TEMP_DIR) as spool:
        if reference.kind == DATA_URI:
            declared, file_name = reference.content_type, ""
            spool.write(_decoded(name, reference, limit))
        else:
            try:
                fetched = file_fetch.fetch(reference.value, into=spool, max_bytes=limit, deadline=deadline)
            except file_fetch.FetchTooLarge:
                raise FileInputTooLarge(name, limit) from None
            except (file_fetch.FetchRefused, TimeoutError) as error:
                raise FileRefused(name, str(error)) from None
            declared, file_name = fetched.content_type, fetched.name
        spool.flush()
        size = spool.tell()
        spool.seek(0)
        sha256 = hashlib.file_digest(spool, "sha256").hexdigest()
        key = (task_type.name, name, sha256, declared)
        if (content_type := _CHECKED.get(key)) is None:
            content_type = _checked(name, field, Path(spool.name), declared)
            _CHECKED.put(key, content_type)
        until = time.time() + _keep_seconds(task_type)
        if (_STORED.get(sha256) or 0) > time.time() + STORED_MARGIN:
            # Stored by this process and kept since (a blob is only deleted once its time has
            # passed, and that time only grows): a poll by resubmitting stores nothing again.
            files.keep_blob(sha256=sha256, until=until)
        else:
            spool.seek(0)
            try:
                files.store(
                    chunks=iter(lambda: spool.read(CHUNK), b""), content_type=content_type, name=file_name,
                    owner=client, ttl=round(until - time.time()), max_bytes=limit,
                )  # fmt: skip
            except files.FileTooLarge:
                raise FileInputTooLarge(name, limit) from None
            _STORED.put(sha256, until)
    return _identity(sha256, size, content_type, file_name)


def _from_upload(task_type: TaskType, name: str, field: FileInput, file_id: str, client: str, limit: int) -> dict:
    try:
        stored = files.lookup(file_id=file_id)
    except files.FileNotFound:
        stored = None
    if stored is None or not _readable(stored, client):
        raise FileRefused(name, "No such file: it expired, or it is not yours to read.")
    if stored.size > limit:
        raise FileInputTooLarge(name, limit)
    # Kept first: from now on no sweep deletes the bytes this job will read.
    files.keep_blob(sha256=stored.sha256, until=time.time() + _keep_seconds(task_type))
    key = (task_type.name, name, stored.sha256, stored.content_type)
    content_type = _CHECKED.get(key)
    if content_type is None:
        try:
            with files.local_path(sha256=stored.sha256) as path:
                content_type = _checked(name, field, path, stored.content_type)
        except files.FileNotFound:
            raise FileRefused(name, "No such file: it expired, or it is not yours to read.") from None
        _CHECKED.put(key, content_type)
    return _identity(stored.sha256, stored.size, content_type, stored.name)


def _readable(stored: files.StoredFile, client: str) -> bool:
    """files.readable_by where it exists (the files API's rule); else the uploader only."""
    readable_by = getattr(files, "readable_by", None)
    if readable_by is not None:
        return readable_by(stored, client=client)
    return stored.owner == client


def _own_upload(url: str, own_hosts: tuple[str, ...]) -> str | None:
    """The upload's id when `url` is this service's `/files/<id>` URL."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.lower()
    except ValueError:
        return None
    path = parts.path.rstrip("/")
    if host not in own_hosts or not path.startswith(_UPLOAD_PATH_PREFIX):
        return None
    file_id = path.removeprefix(_UPLOAD_PATH_PREFIX)
    return file_id if files.valid_id(file_id) else None


def _decoded(name: str, reference: FileReference, limit: int) -> bytes:
    """The data: URI's bytes, its length bounded before decoding (base64 holds 3 bytes per 4
    characters, percent-encoding at least one per 3)."""
    length = len(reference.value)
    if (length * 3 // 4 - 2 if reference.base64 else length // 3) > limit:
        raise FileInputTooLarge(name, limit)
    try:
        raw = (
            base64.b64decode(reference.value, validate=True) if reference.base64 else unquote_to_bytes(reference.value)
        )
    except (binascii.Error, ValueError):
        raise FileRefused(name, "The data: URI's base64 is not valid.") from None
    if len(raw) > limit:
        raise FileInputTooLarge(name, limit)
    return raw


def _checked(name: str, field: FileInput, path: Path, declared: str) -> str:
    """The file's content type, from its bytes for an image; FileRefused when it is not one the
    field takes, when it is not what it claims to be, or when the field's own check refuses it."""
    declared = declared.lower()
    sniffed = _image_type(name, path, expect_image=declared.startswith("image/"))
    if sniffed is not None and declared not in GENERIC_TYPES and declared != sniffed:
        raise FileRefused(name, f"The file claims to be {declared} but its bytes are {sniffed}.")
    content_type = sniffed or declared or "application/octet-stream"
    if content_type not in field.content_types:
        raise FileRefused(name, f"A file of type {' or '.join(field.content_types)} is expected, not {content_type}.")
    if field.check is not None:
        try:
            field.check(path)
        except ValueError as error:
            raise FileRefused(name, f"The file is refused: {error}.") from None
    return content_type


def _image_type(name: str, path: Path, *, expect_image: bool) -> str | None:
    """An image's MIME type from its bytes (None when Pillow does not read them as an image),
    after checking that it is not a decompression bomb and its data is whole."""
    try:
        image = Image.open(path, formats=SNIFFED_FORMATS)
    except Image.DecompressionBombError:
        raise FileRefused(name, f"The image is too large: at most {MAX_IMAGE_PIXELS:,} pixels.") from None
    except (OSError, ValueError, SyntaxError):
        if expect_image:
            raise FileRefused(name, "The file claims to be an image but is not a readable one.") from None
        return None
    with image:
        mime = Image.MIME.get(image.format or "", "")
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise FileRefused(name, f"The image is too large: {width}x{height} pixels, at most {MAX_IMAGE_PIXELS:,}.")
        try:
            if image.format == "JPEG":
                image.draft("L", (64, 64))  # decoded at 1/8 scale: cheap, and a truncated file fails
                image.load()
            else:
                image.verify()  # PNG: every chunk's checksum, to the end, without decompressing
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise FileRefused(name, f"The image data is damaged: {error}.") from None
    return mime or None


def _keep_seconds(task_type: TaskType) -> int:
    """How long a job submitted now may need its input: queued, running, then retried from its
    failure or polled with its result."""
    after = max(task_type.setting("result_ttl"), task_type.setting("failure_ttl"))
    return task_type.setting("job_ttl") + task_type.setting("job_timeout") + after


def _identity(sha256: str, size: int, content_type: str, name: str) -> dict[str, Any]:
    return dict(zip(STORED_FILE_KEYS, (sha256, size, content_type, name), strict=True))


class _Remembered:
    """What this process knows of files it has seen, bounded by entries: the content type each
    checked to for a field (a poll by resubmitting checks once), and until when it stored them."""

    def __init__(self, size: int = 1024) -> None:
        self._entries: OrderedDict[Any, Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            return self._entries.get(key)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._entries[key] = value
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


_CHECKED, _STORED = _Remembered(), _Remembered()


@receiver(setting_changed)
def _forget_stored(*, setting: str, **kwargs) -> None:
    if setting in ("STORAGES", "JOB_FILES_STORAGE"):  # another storage holds none of them (tests)
        _STORED.clear()


# --- the worker's side --------------------------------------------------------------------


@contextlib.contextmanager
def local_inputs(task_type: TaskType, inputs: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The inputs with each stored file a local Path, for the handler's call (removed after it,
    when the storage had to copy them). FileNotFound (with the field's name) when the bytes are gone."""
    if not task_type.file_fields:
        yield inputs
        return
    with contextlib.ExitStack() as stack:
        local = []
        for data in inputs:
            data = dict(data)
            for name in task_type.file_fields:
                stored = data.get(name)
                if isinstance(stored, dict) and "sha256" in stored:
                    try:
                        data[name] = stack.enter_context(files.local_path(sha256=stored["sha256"]))
                    except files.FileNotFound:
                        raise files.FileNotFound(f"the input file of `{name}` is no longer stored") from None
            local.append(data)
        yield local


def run_task_with_files(task_name: str, data: dict[str, Any]) -> dict[str, Any]:
    """Sync mode's process pool: run_task with each file field a local Path."""
    with local_inputs(get_task_type(task_name), [data]) as (local,):
        return run_task(task_name, local)
