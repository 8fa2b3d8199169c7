"""A model worker's watchdog, and whether a worker's registered process still runs here.

A stuck worker (a deadlock, a C call that holds the interpreter, a SIGSTOP) cannot notice it is
stuck: every thread of a stopped process stops with it. So `manage.py rqworker` forks a small
watchdog process first: the worker stamps a shared page of memory each time its work loop goes
round (and, while a batch runs, each time its lease keeper does), and the watchdog SIGKILLs the
worker once the stamp is older than its limit. The worker's supervisor (Compose's restart policy
behind `init: true`, Kubernetes, systemd) starts it again; its jobs come back with their leases.
The watchdog needs no Redis, so an outage never looks like a stall (the loop goes round while
it waits), and it stops when its worker is gone.
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
import struct
import time
from datetime import UTC, datetime

logger = logging.getLogger("factorize_app.worker")

_STAMP = struct.Struct("d")  # the monotonic time of the last stamp; 0: not watching (setup, shutdown)
# How often the watchdog looks at the stamp.
CHECK_EVERY = 0.5


class Watchdog:
    """Created in the worker's process before anything else runs; `start` forks the watcher."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._page = mmap.mmap(-1, _STAMP.size)  # anonymous and shared: the forked watcher sees each write
        self.pid: int | None = None

    def start(self) -> int:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the watcher: no Redis, no Django, a few pages of memory of its own
            try:
                self._watch(parent)
            finally:
                os._exit(0)
        self.pid = pid
        return pid

    def stamp(self) -> None:
        _STAMP.pack_into(self._page, 0, time.monotonic())

    def stop_watching(self) -> None:
        _STAMP.pack_into(self._page, 0, 0.0)

    def _watch(self, parent: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's warm stop; it goes first
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        said = False
        while os.getppid() == parent:
            time.sleep(CHECK_EVERY)
            (last,) = _STAMP.unpack_from(self._page, 0)
            stalled = time.monotonic() - last if last else 0.0
            if stalled <= self.limit:
                said = False
                continue
            if not said:
                logger.error(
                    "the worker's loop has not gone round for %.0f s: killing it to be restarted",
                    stalled,
                    extra={"pid": parent, "stalled_s": round(stalled, 1), "limit_s": self.limit},
                )
                said = True
            try:
                os.kill(parent, signal.SIGKILL)
            except ProcessLookupError:
                return
            time.sleep(2.0)  # a PID 1 in its own namespace ignores the kill: its liveness probe must act
            if os.getppid() == parent:
                logger.error("the worker runs as PID 1 and cannot be killed from inside: its health check must act")
                self.limit = float("inf")


_watchdog: Watchdog | None = None


def install(limit: float) -> Watchdog:
    """Start this process's watchdog (the `rqworker` command's call, before anything else)."""
    global _watchdog
    _watchdog = Watchdog(limit)
    _watchdog.start()
    return _watchdog


def stamp() -> None:
    """The worker's loop went round (or its lease keeper did, while a job runs)."""
    if _watchdog is not None:
        _watchdog.stamp()


def stop_watching() -> None:
    """Setup or shutdown, which may take long without being stuck."""
    if _watchdog is not None:
        _watchdog.stop_watching()


def process_alive(pid: int | None, born: datetime | None) -> bool:
    """Whether the process `pid` of this host's process namespace runs and is the one that was
    there at `born` (a worker's registration time): not a later one that reuses the number, as
    a restarted container's worker does its predecessor's."""
    if not pid:
        return False
    if pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it runs
    if born is None:
        return True
    try:
        if _stat(pid)[0] == "Z":  # killed, not yet collected by its parent
            return False
        return _started_at(pid) <= born.replace(tzinfo=born.tzinfo or UTC).timestamp() + 1.0
    except (OSError, ValueError, IndexError, StopIteration):
        return True  # no /proc: trust the number


def _started_at(pid: int) -> float:
    """A process's start as a Unix time (Linux: /proc)."""
    ticks = int(_stat(pid)[19])  # field 22, starttime, counted after the command name's field 2
    with open("/proc/stat") as stat:
        boot = next(int(line.split()[1]) for line in stat if line.startswith("btime "))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields from the third (the state) on."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()
