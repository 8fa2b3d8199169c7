"""Files uploaded to the service (`POST /files`, multipart), streamed from disk: a file of any size
is read a chunk at a time, never whole into memory, and sent with its length."""

from __future__ import annotations

import io
import mimetypes
import os
import secrets
from pathlib import Path
from typing import BinaryIO


class MultipartFile(io.RawIOBase):
    """A multipart/form-data body of one part named `file`, read from the file as it is sent;
    `len()` is its exact length (requests sends it as Content-Length) and it rewinds for a retry."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.boundary = secrets.token_hex(16)
        name = self.path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        content_type = mimetypes.guess_type(self.path.name)[0] or "application/octet-stream"
        self._head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._size = self.path.stat().st_size
        self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        self._position = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self._head) + self._size + len(self._tail)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if (offset, whence) not in ((0, io.SEEK_SET), (0, io.SEEK_END)):
            raise io.UnsupportedOperation("rewind or seek to the end only")
        self._position = 0 if whence == io.SEEK_SET else len(self)
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = len(self) - self._position
        out = bytearray()
        while len(out) < size and self._position < len(self):
            out += self._read_part(size - len(out))
        return bytes(out)

    def _read_part(self, size: int) -> bytes:
        head, body = len(self._head), self._size
        if self._position < head:
            piece = self._head[self._position : self._position + size]
        elif self._position < head + body:
            self._file.seek(self._position - head)
            piece = self._file.read(min(size, head + body - self._position))
            if not piece:
                raise OSError(f"{self.path} shrank while it was being sent")
        else:
            start = self._position - head - body
            piece = self._tail[start : start + size]
        self._position += len(piece)
        return piece

    def close(self) -> None:
        self._file.close()
        super().close()
