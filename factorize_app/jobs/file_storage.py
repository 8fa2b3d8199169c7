"""The directory storage of jobs' files (FILES_STORAGE=filesystem): Django's FileSystemStorage whose
files appear whole or not at all.

Django's own writes a file in place under its final name, so a reader, or a store of the same bytes
asking `exists`, could take a half-written blob for the whole one, and a write cut short by a full
disk would leave a truncated blob that later stores of those bytes trust. Here the bytes go to a
temporary file in the storage's `.partial/` directory (same filesystem), are flushed to disk, and
are then linked under their name, which fails if the name exists (Django's rule: the caller gets
another name). Leftovers of writers that died are removed by the sweep (`remove_partials`).
S3-compatible storage needs none of this: an object appears only when its upload completes.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time

from django.core.files.storage import FileSystemStorage

PARTIAL_DIR = ".partial"


class AtomicFileSystemStorage(FileSystemStorage):
    def _save(self, name: str, content) -> str:
        partial_dir = os.path.join(self.location, PARTIAL_DIR)
        os.makedirs(partial_dir, exist_ok=True)
        os.makedirs(os.path.dirname(self.path(name)), exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=partial_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in content.chunks():
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())  # a queued job's input survives a crash of the host
            while True:
                try:
                    _publish(temporary, self.path(name))
                    break
                except FileExistsError:
                    name = self.get_available_name(name)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        return name

    def remove_partials(self, *, older_than: float) -> int:
        """Delete the temporary files of writes that started more than `older_than` seconds ago
        (their writer died); answers how many."""
        partial_dir = os.path.join(self.location, PARTIAL_DIR)
        removed = 0
        try:
            entries = list(os.scandir(partial_dir))
        except FileNotFoundError:
            return 0
        cutoff = time.time() - older_than
        for entry in entries:
            try:
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def _publish(temporary: str, path: str) -> None:
    """The temporary file under its name, atomically; FileExistsError if the name is taken."""
    try:
        os.link(temporary, path)
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):  # no hard links here
            raise
        if os.path.exists(path):
            raise FileExistsError(path) from None
        os.rename(temporary, path)
