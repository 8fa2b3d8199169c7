"""The processes the tests and the benchmark start, wait on and stop: free ports, readiness,
the production web server (scripts/serve.sh), `manage.py rqworker` and any other command.

Plain Python (no pytest, no Django settings): `bench/` imports it as the tests do, and each
passes the environment of its own service (tests/conftest.py `service_env`, bench/context.py).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis
import requests
from rq.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


class TimedOut(AssertionError):
    """A condition waited on never came: a failed test, or a failed benchmark scenario."""


def wait_until(predicate: Callable[[], object], timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    """Poll `predicate` until it returns something truthy, and return that; TimedOut after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimedOut(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30, group: bool = False) -> None:
    """Signal a process (its whole process group with `group`), wait, and kill it after `timeout` s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig) if group else process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL) if group else process.kill()
        process.wait()


@contextlib.contextmanager
def running(
    args: list[str],
    env: dict[str, str],
    ready: Callable[[], bool] | None = None,
    what: str | None = None,
    group: bool = False,
    timeout: float = 60,
) -> Iterator[subprocess.Popen]:
    """A command (output discarded) yielded once `ready()`, stopped on the way out; with `group`
    in a session of its own, so that its children (a server's workers) are stopped with it."""
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=group
    )
    what = what or f"{args[0]} to be ready"
    try:
        if ready is not None:

            def started() -> bool:
                assert process.poll() is None, f"{what}: the process exited at start"
                return ready()

            wait_until(started, timeout=timeout, interval=0.02, what=what)
        yield process
    finally:
        stop(process, group=group)


def answers(url: str, status: int = 200) -> Callable[[], bool]:
    """Whether a GET of `url` answers `status` (False while not listening or still importing)."""

    def check() -> bool:
        try:
            return requests.get(url, timeout=5).status_code == status
        except requests.RequestException:
            return False

    return check


@contextlib.contextmanager
def web_server_with(env: dict[str, str], group: bool = False) -> Iterator[str]:
    """The production web server (scripts/serve.sh, as `make serve` and the Docker image run it)
    on a free port with this environment, yielded as its base URL once /healthz answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_env = {**env, "HOST": "127.0.0.1", "PORT": str(port)}
    with running(["scripts/serve.sh"], server_env, answers(f"{url}/healthz"), "the web server to answer", group):
        yield url


def rqworker(env: dict[str, str], *queues: str, burst: bool = False, log: Path | None = None) -> subprocess.Popen:
    """A real `manage.py rqworker` (all queues when none is named), its output to `log` or discarded."""
    args = [PYTHON, "manage.py", "rqworker", *queues, *(["--burst"] if burst else [])]
    with open(log or os.devnull, "wb") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def registered(conn: redis.Redis, process: subprocess.Popen) -> bool:
    """Whether the worker process has registered with RQ (its setup done), or has already exited."""
    return any(w.pid == process.pid for w in Worker.all(connection=conn)) or process.poll() is not None


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (a server's worker processes)."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        try:
            pending.extend(int(child) for child in Path(f"/proc/{current}/task/{current}/children").read_text().split())
        except FileNotFoundError:
            continue
    return tree


def resident_bytes(pid: int) -> int:
    """The resident memory of a process and its descendants."""
    total = 0
    for current in process_tree(pid):
        with contextlib.suppress(FileNotFoundError):
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
    return total


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threaded HTTP server of `handler` on a free loopback port for the block: its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def peak_resident_while(pid: int, action: Callable[[], object], *, every: float = 0.02) -> tuple[object, int]:
    """What `action()` answers, and the largest resident size of `pid` (and its descendants) while
    it ran, sampled every `every` seconds."""
    peak, done = [resident_bytes(pid)], threading.Event()

    def sample() -> None:
        while not done.wait(every):
            peak.append(resident_bytes(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        return action(), max(peak)
    finally:
        done.set()
        sampler.join()


class RepeatedUpload:
    """A multipart/form-data body of `count` times `chunk` as the part `file`, never whole in
    memory: requests reads it a part at a time (`read`), its length known (`len`)."""

    BOUNDARY = "repeated-upload-boundary"
    content_type = f"multipart/form-data; boundary={BOUNDARY}"

    def __init__(self, chunk: bytes, count: int, *, name: str = "upload.bin") -> None:
        head = (
            f'--{self.BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{self.BOUNDARY}--\r\n".encode()
        self.parts = [memoryview(part) for part in (head, *([chunk] * count), tail)]
        self.length = sum(len(part) for part in self.parts)

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        """The next `size` bytes (at most: a part at a time, so nothing is copied twice)."""
        while self.parts and not self.parts[0]:
            self.parts.pop(0)
        if not self.parts:
            return b""
        part = self.parts[0]
        size = len(part) if size < 0 else size
        self.parts[0] = part[size:]
        return bytes(part[:size])


def server_pid(url: str) -> int:
    """The main process of the server listening on the URL's port."""
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    inode = next(
        fields[9]
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A"  # LISTEN
    )
    holders = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and any(
                link.readlink().name == f"socket:[{inode}]" for link in (proc / "fd").iterdir()
            ):
                holders.append(int(proc.name))
        except (FileNotFoundError, PermissionError):
            continue
    # The server's workers share the listening socket with it: the main one is the holder whose
    # parent holds none.
    return next(pid for pid in holders if _parent(pid) not in holders)


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
