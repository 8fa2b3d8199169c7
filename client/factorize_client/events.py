"""Server-sent events (`text/event-stream`, the WHATWG format) read from a streaming response."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass
class Event:
    event: str
    data: str
    id: str | None
    retry: int | None  # milliseconds the server asks a reconnecting client to wait


def lines_of(chunks: Iterable[bytes]) -> Iterator[str]:
    """Lines of a byte stream as they arrive, ended by LF or CRLF. Split here rather than by
    `str.splitlines`, which would also split a JSON string holding U+2028 or U+0085."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.removesuffix(b"\r").decode("utf-8", errors="replace")
    if pending:
        yield pending.decode("utf-8", errors="replace")


def parse(lines: Iterable[str]) -> Iterator[Event]:
    """Events from the stream's lines: `field: value` lines, dispatched at each blank line;
    `:` starts a comment (the server's keep-alive)."""
    event, data, event_id, retry = "message", [], None, None
    for line in lines:
        if not line:
            if data:
                yield Event(event, "\n".join(data), event_id, retry)
            event, data, retry = "message", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            event_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value)
            if not data:  # a retry alone (the server ending a stream it could not hold) still counts
                yield Event("retry", "", event_id, retry)
