"""`make run`'s processes: the web server, one worker per model (each setting its model up in
parallel with the others, in its own environment if it has one), and the webhooks worker.

A process that exits (a setup that raised, a crash) is started again after a back-off that
doubles from 1 s up to 60 s (back to 1 s once it has run for a minute), and reported: one log
line here, and, for a model's worker that did not record why itself (it records a failed setup
in Redis before it exits), its last output line as its setup error, shown in /queues and
/readyz. With reload on, a change in a model's folder restarts that model's worker; a change in
the service's code restarts everything.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import datetime
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from factorize_app import jobs

logger = logging.getLogger("factorize_app.devserver")

BACKOFF_FIRST, BACKOFF_CAP = 1.0, 60.0
STOP_TIMEOUT = 15.0  # a worker's warm stop finishes its batch; past this it is killed
TAIL_LINES = 20


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(Exception):
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


@dataclass
class Child:
    """One supervised process."""

    name: str  # "web", "webhooks", or the task type's name
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    task_name: str | None = None  # a model's worker
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    started_wall: str = ""
    restart_at: float | None = 0.0  # monotonic time of the next start; None: running or stopped for good
    backoff: float = BACKOFF_FIRST
    failures: int = 0
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))

    def start(self, output_lock: threading.Lock) -> None:
        self.tail.clear()
        self.started_at = time.monotonic()
        self.started_wall = _now()
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops each in order
            preexec_fn=_die_with_parent if _PRCTL is not None else None,
        )
        self.restart_at = None
        threading.Thread(target=self._forward, args=(self.process, output_lock), daemon=True).start()

    def _forward(self, process: subprocess.Popen, output_lock: threading.Lock) -> None:
        """The child's output, line by line, onto ours; its last lines kept to say why it exited."""
        for line in iter(process.stdout.readline, b""):
            self.tail.append(line.decode(errors="replace").rstrip())
            with output_lock:
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()

    def signal_stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait_stopped(self) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Supervisor:
    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.output_lock = threading.Lock()
        self.stopping = threading.Event()
        self._restarts: collections.deque[set[str]] = collections.deque()
        self._restarts_lock = threading.Lock()

    def request_restart(self, names: set[str]) -> None:
        """Restart these children now (the watcher's call, from its thread)."""
        with self._restarts_lock:
            self._restarts.append(names)

    def run(self) -> None:
        """Start everything and keep it running until stop() (or SIGINT/SIGTERM)."""
        try:
            while not self.stopping.is_set():
                self._apply_restarts()
                now = time.monotonic()
                for child in self.children:
                    if child.restart_at is not None and now >= child.restart_at:
                        try:
                            child.start(self.output_lock)
                        except OSError as exc:  # e.g. its environment's interpreter is gone
                            delay = self._next_delay(child)
                            logger.error(f"could not start {child.name} ({exc}): trying again in {delay:g} s")
                            child.restart_at = time.monotonic() + delay
                    elif child.process is not None and child.restart_at is None and child.process.poll() is not None:
                        self._exited(child)
                self.stopping.wait(0.2)
        finally:
            self.stop_all()

    def stop(self) -> None:
        """Stop everything (warm: a worker finishes its batch); asked again, kill what is left."""
        if self.stopping.is_set():
            for child in self.children:
                if child.process is not None and child.process.poll() is None:
                    child.process.kill()
        self.stopping.set()

    def stop_all(self) -> None:
        for child in self.children:
            child.signal_stop()
        for child in self.children:
            child.wait_stopped()

    def _apply_restarts(self) -> None:
        with self._restarts_lock:
            wanted = set().union(*self._restarts) if self._restarts else set()
            self._restarts.clear()
        chosen = [child for child in self.children if child.name in wanted]
        for child in chosen:
            child.restart_at = None  # no exit handling for a stop asked here
            child.signal_stop()
        for child in chosen:
            child.wait_stopped()
            logger.info("reloading", extra={"child": child.name})
            child.backoff, child.restart_at = BACKOFF_FIRST, 0.0

    def _exited(self, child: Child) -> None:
        code = child.process.returncode
        delay = self._next_delay(child)
        last = next((line for line in reversed(child.tail) if line.strip()), "")
        logger.error(
            f"{child.name} exited with code {code}: starting it again in {delay:g} s",
            extra={"child": child.name, "exit_code": code, "restart_in_s": delay, "last_output": last[-500:]},
        )
        if child.task_name is not None and code != 0:
            self._report(child, code, last)
        child.restart_at = time.monotonic() + delay

    @staticmethod
    def _next_delay(child: Child) -> float:
        """1 s, 2 s, 4 s ... up to BACKOFF_CAP; from 1 s again after a run that lasted that long."""
        if time.monotonic() - child.started_at >= BACKOFF_CAP:
            child.backoff = BACKOFF_FIRST
        delay = child.backoff
        child.backoff = min(child.backoff * 2, BACKOFF_CAP)
        child.failures += 1
        return delay

    def _report(self, child: Child, code: int, last: str) -> None:
        """A model's worker that exited without recording why (it could not import its model,
        it crashed): its last output line becomes its setup error in /queues and /readyz."""
        try:
            recorded = jobs.setup_failures().get(child.task_name)
            if recorded is None or recorded.get("last", "") < child.started_wall:
                error = last or f"the worker exited with code {code}"
                jobs.record_setup_failure(task_name=child.task_name, error=error, traceback="\n".join(child.tail))
        except jobs.QueueUnavailable as exc:
            logger.warning("could not record a worker's exit", extra={"child": child.name, "error": str(exc)})


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(timespec="seconds")


def install_signal_handlers(supervisor: Supervisor) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: supervisor.stop())


def environment(python: str, **extra: str) -> dict[str, str]:
    """A child's environment: its interpreter's directory first on PATH (servers, `python`)."""
    env = {**os.environ, **extra}
    env["PATH"] = f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env
