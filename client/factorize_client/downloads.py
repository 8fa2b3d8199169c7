"""A job's file results saved to a directory (`factorize ... --download DIR`).

A status body carries each file as {"url", "id", "name", "size", "content_type", "sha256"} (a
file field's value, or `result_file` for a result too large to answer inline). Each is fetched
from this client's own service by its id (`GET /files/<id>`: the API key goes nowhere else,
whatever URL a body names), streamed to disk, checked against its SHA-256, and saved under its
name made safe: no directory part, nothing outside DIR, no existing file overwritten.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from factorize_client.errors import ClientError
from factorize_client.transport import Transport

FILE_ID = re.compile(r"^file_[0-9a-f]{32}$")
CHUNK = 1024 * 1024
MAX_NAME = 120
READ_TIMEOUT = 60.0


def files_in(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The file objects of a status body: values (or list items) with a file id and a digest."""
    found = []
    for value in body.values():
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, dict) or not isinstance(item.get("sha256"), str):
                continue
            if FILE_ID.match(str(item.get("id", ""))):
                found.append(item)
    return found


def safe_name(name: Any, fallback: str) -> str:
    """The last part of `name`, in letters, digits and `._-+` only, not hidden; else `fallback`."""
    last = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(char if char.isascii() and (char.isalnum() or char in "._-+") else "_" for char in last)
    return cleaned.lstrip(".")[:MAX_NAME] or fallback


def download(transport: Transport, file: dict[str, Any], directory: Path) -> Path:
    """Save one file in `directory` (made if missing); its path. A name already taken gets a
    number (`out-1.png`); a download that does not match its digest is removed, ClientError."""
    directory.mkdir(parents=True, exist_ok=True)
    target, out = _reserve(directory, safe_name(file.get("name"), file["id"]))
    try:
        response = transport.request(
            "GET", f"/files/{file['id']}", headers={"Accept": "*/*"}, stream=True, read_timeout=READ_TIMEOUT
        )
        digest = hashlib.sha256()
        with response, out:
            for chunk in response.iter_content(CHUNK):
                out.write(chunk)
                digest.update(chunk)
        if digest.hexdigest() != file["sha256"]:
            raise ClientError(f"{file['id']}: the bytes received do not match its sha256; not saved")
    except BaseException:
        out.close()
        target.unlink(missing_ok=True)
        raise
    return target


def _reserve(directory: Path, name: str):
    """A new file in `directory` named `name` (or `stem-N.suffix`), created exclusively, open."""
    stem, dot, suffix = name.partition(".")
    for number in range(1000):
        candidate = directory / (name if number == 0 else f"{stem}-{number}{dot}{suffix}")
        try:
            return candidate, candidate.open("xb")
        except FileExistsError:
            continue
    raise ClientError(f"{directory}: no free name for {name}")
