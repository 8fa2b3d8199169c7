"""What a handler may return for a result field declared as a file (`fields.FileOutput`): a
`pathlib.Path`, `bytes`, or an `OutputFile` that also names the bytes' media type and file name.

    from factorize_app.tasks import OutputFile

    def handle(self, data):
        ...
        return {"image": OutputFile(path=png_path, content_type="image/png", name="result.png",
                                    delete_after=True)}

The worker stores each one outside Redis once handle() returns (docs/files.md, "File outputs").
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class OutputFile:
    """A file output: the bytes at `path` (read after handle() returns, and removed once stored
    when `delete_after`) or the bytes `data`; `content_type` None: the field's; `name` None: the
    path's name, else the field's."""

    path: os.PathLike | str | None = None
    data: bytes | None = None
    content_type: str | None = None
    name: str | None = None
    delete_after: bool = False

    def __post_init__(self) -> None:
        if (self.path is None) == (self.data is None):
            raise ValueError("OutputFile: give exactly one of path= and data=")
