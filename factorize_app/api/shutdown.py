"""Graceful shutdown: a web process told to stop answers what it holds at once, then exits.

On SIGTERM (or SIGINT) the server (granian or gunicorn) stops accepting connections and waits for
the requests under way before its process exits, killing it after a timeout. Quick requests end
by themselves; held ones (a `Prefer: wait` poll, a waiting submit, an event stream) could last a
minute and would be cut off. Once this process learns of the signal it is *draining*: every held
request answers now with the job's current state (a poll: 202 and `Retry-After`; a stream: its
state and a `retry:` for EventSource), no new request is held, and /readyz answers 503 so load
balancers stop sending it requests. The client polls again, on a server that is not stopping.

How the process learns of the signal, whichever server loaded the application:
- gunicorn installs its worker's handlers before loading the application: the handler installed
  here runs first, then calls the server's own.
- granian installs its worker's handler *after* loading the application, replacing ours; but
  Python's signal machinery also writes each caught signal's number to the process's wake-up file
  descriptor (`signal.set_wakeup_fd`), which granian leaves alone: a thread reading it sees the
  SIGTERM. (gunicorn uses that descriptor itself; it is taken only when no one else holds it.)
The handler only writes to a pipe (a signal handler must not touch Redis or locks): the thread
reading it does the work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

from factorize_app import jobs

logger = logging.getLogger("factorize_app.api")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_DRAINING = threading.Event()
_installed_in: int | None = None  # the pid that installed it (a forked child installs again)


def draining() -> bool:
    """Whether this process is stopping: hold nothing, answer at once, report not ready."""
    return _DRAINING.is_set()


def begin_drain(reason: str) -> None:
    """Answer every held request of this process now, and hold no new one."""
    if _DRAINING.is_set():
        return
    _DRAINING.set()
    from factorize_app.api.request_options import HELD  # it reads draining(): imported here, not above
    from factorize_app.api.streams import SLOTS

    held = {"reason": reason, "held_polls_and_streams": HELD.total(), "streams": SLOTS.open}
    logger.info("draining: answering held requests now", extra=held)
    jobs.release_waits()


def install() -> bool:
    """Learn of this process's stop signals (call at application load, in the main thread of each
    server process). False where it cannot (not the main thread: a test server, runserver)."""
    global _installed_in
    if _installed_in == os.getpid():
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    for signum in STOP_SIGNALS:
        _chain_handler(signum, write_end)
    previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    if previous != -1:  # the server's own (gunicorn): keep it; our handlers above do the job
        signal.set_wakeup_fd(previous)
    threading.Thread(target=_watch, args=(read_end,), name="graceful-shutdown", daemon=True).start()
    _installed_in = os.getpid()
    return True


def _chain_handler(signum: int, write_end: int) -> None:
    previous = signal.getsignal(signum)

    def handler(number, frame):
        with contextlib.suppress(OSError):  # full pipe: a byte is already waiting
            os.write(write_end, bytes([number]))
        if callable(previous):
            previous(number, frame)
        elif previous == signal.SIG_DFL:  # what the signal would have done: end the process
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)

    signal.signal(signum, handler)


def _watch(read_end: int) -> None:
    """Wait for a stop signal's byte (from our handler or the wake-up descriptor), then drain."""
    stops = {int(signum) for signum in STOP_SIGNALS}
    while True:
        try:
            caught = os.read(read_end, 512)
        except InterruptedError:
            continue
        if not caught:
            return
        stop = next((number for number in caught if number in stops), None)
        if stop is not None:
            begin_drain(signal.Signals(stop).name)
            return
