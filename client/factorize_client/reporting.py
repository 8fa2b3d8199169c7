"""What the `factorize` command prints while its jobs run: results as they are done, waits,
progress and streamed outputs (the Reporter), and the lines it prints for a done job."""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from factorize_client.progress import Progress

NOT_IN_RESULT = ("done", "load", "progress", "output")  # a status body's bookkeeping, left out of a JSON line


class Reporter:
    """Everything the command prints while jobs run, one thread at a time: results on stdout
    (numbers as they are done, JSON in input order), waits and progress on stderr."""

    def __init__(
        self, labels: list[str], numbers: bool, progress: Progress, save: Callable[[dict], list[str]] | None = None
    ):
        self.labels = labels
        self.save = save  # --download: saves a done job's files, answers what it says of them
        self.numbers = numbers
        self.progress = progress
        self.lock = threading.RLock()
        self.outcomes: Counter[str] = Counter()
        self.held: dict[int, str] = {}  # JSON lines done before an earlier one
        self.next = 0  # the next JSON line to print
        self.watched: dict[int, str] = {}
        self.streamed: dict[int, int] = {}  # pieces of each job's output printed

    def waiting(self, seconds: float, reason: str) -> None:
        shown = f"{seconds:.1f}" if seconds < 1 else str(math.ceil(seconds))
        with self.lock:
            self.progress.note(f"waiting {shown} s: {reason}")

    def done(self, index: int, body: dict[str, Any]) -> None:
        saved = self.save(body) if self.save is not None else []  # in the caller's thread
        with self.lock:
            for note in saved:
                self.progress.note(note)
            outcome, line = (number_line if self.numbers else json_line)(self.labels[index], body)
            self.outcomes[outcome] += 1
            if self.numbers:
                self.progress.emit(line)
            else:
                self.held[index] = line
                while self.next in self.held:
                    self.progress.emit(self.held.pop(self.next))
                    self.next += 1
            self.progress.update(self.outcomes.total())

    def output(self, index: int, pieces: list[Any]) -> None:
        """--watch: a streaming job's pieces so far; each printed once, as it arrives, on stderr:
        `N output 2: [1000000007, 1]`."""
        with self.lock:
            printed = self.streamed.get(index, 0)
            for number in range(printed, len(pieces)):
                self.progress.note(f"{self.labels[index]} output {number}: {json.dumps(pieces[number])}")
            self.streamed[index] = max(printed, len(pieces))

    def running(self, index: int, body: dict[str, Any]) -> None:
        """--watch: a job's progress report, once per change."""
        if isinstance(body.get("output"), list):
            self.output(index, body["output"])
        progress = body.get("progress")
        if not isinstance(progress, dict):
            return
        fraction = progress.get("fraction")
        share = f" ({100 * fraction:.0f}%)" if isinstance(fraction, (int, float)) else ""
        line = f"{self.labels[index]}: {progress.get('message') or 'running'}{share}"
        with self.lock:
            if self.watched.get(index) != line:
                self.watched[index] = line
                self.progress.note(line)


def outcome_of(body: dict[str, Any]) -> str:
    status = body.get("status")
    return status if status in ("finished", "invalid") else "failed"


def error_text(body: dict[str, Any]) -> str:
    errors = body.get("errors") or {}
    messages = errors.values() if isinstance(errors, dict) else [errors]
    return "; ".join(str(m) for entry in messages for m in (entry if isinstance(entry, list) else [entry]))


def number_line(label: str, body: dict[str, Any]) -> tuple[str, str]:
    """`408216 = 2^3 3^1 73^1 233^1`, `N failed: ...` or `N invalid: ...`."""
    outcome = outcome_of(body)
    if outcome == "invalid":
        return outcome, f"{label} invalid: {error_text(body) or 'rejected by the service'}"
    label = str(body["number"]) if body.get("number") is not None else label
    if outcome == "finished":
        return outcome, f"{label} = {body.get('factorization_str')}"
    return outcome, f"{label} failed: {body.get('error') or body.get('status')}"


def json_line(label: str, body: dict[str, Any]) -> tuple[str, str]:
    """The status body without its bookkeeping, as one JSON line."""
    shown = {name: value for name, value in body.items() if name not in NOT_IN_RESULT}
    return outcome_of(body), json.dumps(shown, separators=(",", ":"))
