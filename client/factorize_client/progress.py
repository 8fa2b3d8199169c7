"""The command's progress on stderr: a bar redrawn in place on a terminal, plain lines elsewhere."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

PLAIN_EVERY = 10.0  # seconds between `progress:` lines when stderr is not a terminal


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """done/total, rate and ETA. On a terminal: `[#####.....] 12/40  30% ...` redrawn with `\\r`
    (padded with blanks, no escape codes, so any terminal shows it right). Otherwise a plain
    `progress:` line at most every PLAIN_EVERY seconds, nothing a log file would garble. Every
    other line written to stderr or a terminal goes through `note` or `emit`, so the bar steps
    aside for it."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, enabled: bool = True):
        self.total = max(total, 1)
        self.stream = stream
        self.live = enabled and stream.isatty()
        self.plain = enabled and not self.live
        self.done = 0
        self.baseline: tuple[float, int] | None = None  # the first update: results cached before it don't count
        self.shown = 0  # width of the line on screen
        self.last_plain = time.monotonic()
        self.printed = 0  # the count the last `progress:` line showed

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.baseline is None:
            self.baseline = (now, 0)
        self.done = done
        if self.live:
            self.draw(self.line(now))
        elif self.plain and self.printed < done < self.total and now - self.last_plain >= PLAIN_EVERY:
            print(f"progress: {done}/{self.total} done", file=self.stream, flush=True)
            self.last_plain, self.printed = now, done

    def rate(self, now: float) -> float | None:
        """Jobs per second since the first update."""
        if self.baseline is None:
            return None
        start, done_then = self.baseline
        return (self.done - done_then) / (now - start) if now > start and self.done > done_then else None

    def line(self, now: float) -> str:
        rate = self.rate(now)
        eta = format_duration((self.total - self.done) / rate) if rate else "?"
        speed = f"{rate:.1f}" if rate else "-"
        stats = f" {self.done}/{self.total} {100 * self.done // self.total:3d}%  {speed} jobs/s  ETA {eta}"
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns or 80  # 0: a pty nobody sized
        except (OSError, ValueError):
            columns = 80
        width = max(10, min(40, columns - len(stats) - 3))
        filled = width * self.done // self.total
        return f"[{'#' * filled}{'.' * (width - filled)}]{stats}"

    def draw(self, text: str) -> None:
        self.stream.write("\r" + text.ljust(self.shown))
        self.stream.flush()
        self.shown = len(text)

    def clear(self) -> None:
        """Blank the bar, before anything else is written to the same terminal."""
        if self.live and self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.stream.flush()
            self.shown = 0

    def note(self, line: str) -> None:
        """A line on stderr (a wait, a job's progress); the bar is redrawn by the next update."""
        self.clear()
        print(line, file=self.stream, flush=True)

    def emit(self, line: str) -> None:
        """A result on stdout; the bar steps aside when both share the terminal."""
        if sys.stdout.isatty():
            self.clear()
        print(line, flush=True)
