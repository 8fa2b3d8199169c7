"""The command-line client through its old name (`python -m factorize_app.client`, a shim that runs
the factorize-client package's `factorize` command) against the live service, run as a user runs it.

Every test starts the client as a subprocess on the real web server (`live_url`, or one of its
own), with real `manage.py rqworker` processes, and reads its output lines, its exit status
and its stderr.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import requests

from tests.conftest import ROOT, blocked_reads, dead_redis_url, free_port, wait_until, web_server
from tests.processes import http_server

SEED_LINE = "408216 = 2^3 3^1 73^1 233^1"
HARD_SEMIPRIME = 671998030559713968361666935769 * 282174488599599500573849980909  # minutes for sympy


def client_command(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "factorize_app.client", "--url", url, *args]


def run_client(url: str, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The client with piped stdout and stderr (and stdin: the text given, else nothing)."""
    return subprocess.run(
        client_command(url, *args),
        cwd=ROOT,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


def product(factorization: str) -> int:
    """`2^3 3^1` -> 24."""
    terms = (term.split("^") for term in factorization.split())
    return math.prod(int(prime) ** int(exponent) for prime, exponent in terms)


def assert_plain(result: subprocess.CompletedProcess) -> None:
    """Piped output: no carriage returns or escape codes anywhere, no traceback."""
    for stream in (result.stdout, result.stderr):
        assert "\r" not in stream and "\x1b" not in stream, repr(stream)
    assert "Traceback" not in result.stderr, result.stderr


def test_the_client_sends_only_ascii_digits_as_numbers():
    sys.path.insert(0, str(ROOT / "client"))  # the package's checkout copy, as the shim finds it
    from factorize_client.inputs import json_number

    assert json_number("408216") == 408216
    for token in ("١٢", "１２", "²", "1e5", "0x1f"):
        assert json_number(token) == token  # sent as text: the service answers it invalid, as the client does


def test_known_numbers_print_their_factorization_and_exit_0(live_url, warm_worker):
    warm_worker("factorization")
    result = run_client(live_url, "408216", "1000003", "6")
    assert result.returncode == 0, result.stderr
    assert sorted(lines(result.stdout)) == sorted([SEED_LINE, "1000003 = 1000003^1", "6 = 2^1 3^1"])
    assert_plain(result)
    assert "3 numbers" in result.stderr and "3 finished, 0 failed, 0 invalid" in result.stderr


def test_random_20_reproduces_the_seed_client(live_url, warm_worker):
    warm_worker("factorization")
    result = run_client(live_url, "--random", "20")
    assert result.returncode == 0, result.stderr
    output = lines(result.stdout)
    assert len(output) == 20
    for line in output:
        number, _, factorization = line.partition(" = ")
        assert 2 <= int(number) <= 2**20
        assert product(factorization) == int(number), line
    assert_plain(result)


def test_invalid_numbers_from_a_file_print_invalid_and_exit_1(live_url, warm_worker, tmp_path):
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("# to factor\n408216\n\nabc\n1   # too small\n")
    warm_worker("factorization")
    result = run_client(live_url, "--file", str(numbers))
    assert result.returncode == 1, result.stderr
    output = lines(result.stdout)
    assert len(output) == 3, output
    assert SEED_LINE in output
    assert any(line.startswith("abc invalid: ") and "integer" in line for line in output), output
    assert any(line.startswith("1 invalid: ") and "2" in line for line in output), output
    assert "1 finished, 0 failed, 2 invalid" in result.stderr
    assert_plain(result)


def test_a_failed_job_prints_failed_and_exits_1(warm_worker):
    with web_server(JOB_TIMEOUT="2") as url:
        warm_worker("factorization")
        result = run_client(url, str(HARD_SEMIPRIME), "408216")
    assert result.returncode == 1, result.stderr
    assert sorted(lines(result.stdout)) == sorted([f"{HARD_SEMIPRIME} failed: timed out after 2 s", SEED_LINE])
    assert "1 finished, 1 failed, 0 invalid" in result.stderr


def test_numbers_from_stdin(live_url, warm_worker):
    warm_worker("factorization")
    piped = run_client(live_url, stdin="408216\n# a comment\n\n77\n")  # no arguments: stdin is not a terminal
    assert piped.returncode == 0, piped.stderr
    assert sorted(lines(piped.stdout)) == sorted([SEED_LINE, "77 = 7^1 11^1"])
    dash = run_client(live_url, "12", "-", stdin="408216\n")
    assert dash.returncode == 0, dash.stderr
    assert sorted(lines(dash.stdout)) == sorted([SEED_LINE, "12 = 2^2 3^1"])


def test_a_terminal_shows_the_progress_bar_in_place(live_url, warm_worker):
    warm_worker("factorization")
    master, terminal = os.openpty()
    tty.setraw(terminal)  # no output processing: every \r read back is the client's own
    process = subprocess.Popen(
        client_command(live_url, *map(str, range(1000, 1030))),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
    )
    os.close(terminal)
    screen = bytearray()

    def read_terminal() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the client closed the terminal's last end
                return
            if not data:
                return
            screen.extend(data)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        stdout, _ = process.communicate(timeout=120)
    finally:
        reader.join(10)
        os.close(master)
    stderr = screen.decode()
    assert process.returncode == 0, stderr
    assert len(lines(stdout)) == 30 and "\r" not in stdout
    assert "\r[" in stderr and "30/30 100%" in stderr, repr(stderr)
    assert "jobs/s" in stderr and "ETA" in stderr
    assert stderr.rstrip().endswith("30 finished, 0 failed, 0 invalid"), repr(stderr[-200:])


def test_an_unreachable_service_exits_2_without_a_traceback():
    started = time.monotonic()
    result = run_client(f"http://127.0.0.1:{free_port()}", "408216")
    assert result.returncode == 2
    assert "cannot reach" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    assert time.monotonic() - started < 30


def test_usage_errors_exit_2(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # never reached: the usage is checked first
    nothing = run_client(url)  # no numbers, and an empty stdin
    assert nothing.returncode == 2 and "no numbers" in nothing.stderr
    assert run_client("localhost:8123", "5").returncode == 2  # no scheme
    assert run_client(url, "--file", str(tmp_path / "missing.txt")).returncode == 2
    assert run_client(url, "--batch-size", "0", "5").returncode == 2
    assert "Traceback" not in nothing.stderr


def test_timeout_without_a_worker_exits_2(live_url):
    started = time.monotonic()
    result = run_client(live_url, "--timeout", "3", "--wait", "1", "408216", "77")
    assert result.returncode == 2
    assert "timed out after 3 s: 0 of 2 done" in result.stderr, result.stderr
    assert time.monotonic() - started < 30
    assert_plain(result)


def test_redis_down_is_retried_a_bounded_number_of_times_then_exits_2():
    with web_server(dead_redis_url()) as url:
        result = run_client(url, "--retries", "1", "408216", timeout=60)
    assert result.returncode == 2
    assert "unavailable (503)" in result.stderr and "Traceback" not in result.stderr, result.stderr
    # The wait before the retry is said, for as long as the 503's Retry-After asks.
    assert "waiting 5 s: the service is unavailable (503)" in result.stderr, result.stderr


@contextmanager
def recording_proxy(upstream: str) -> Iterator[tuple[str, list[dict]]]:
    """A pass-through HTTP proxy in front of the service that records each request's Prefer header
    and the answer's Preference-Applied: what the client asked for, seen from the outside."""
    seen: list[dict] = []

    class Forward(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {name: self.headers[name] for name in ("Content-Type", "Prefer") if name in self.headers}
            answer = requests.post(f"{upstream}{self.path}", data=body, headers=headers, timeout=120)
            seen.append({"prefer": self.headers.get("Prefer"), "applied": answer.headers.get("Preference-Applied")})
            self.send_response(answer.status_code)
            for name in ("Content-Type", "Retry-After", "Preference-Applied"):
                if name in answer.headers:
                    self.send_header(name, answer.headers[name])
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args) -> None:
            pass

    with http_server(Forward) as url:
        yield url, seen


def test_the_client_waits_with_prefer_instead_of_polling(live_url, redis_conn, start_worker):
    with recording_proxy(live_url) as (url, seen):
        process = subprocess.Popen(
            client_command(url, "--wait", "5", "408216"),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started = time.monotonic()
        # The job sits queued: the client holds a request open instead of re-posting.
        wait_until(lambda: blocked_reads(redis_conn) >= 1, timeout=30, what="the client's request to be held")
        start_worker("factorization")
        stdout, stderr = process.communicate(timeout=120)
        elapsed = time.monotonic() - started
    assert process.returncode == 0, stderr
    assert lines(stdout) == [SEED_LINE]
    assert all(request["prefer"] == "wait=5" for request in seen), seen
    assert any(request["applied"] == "wait=5" for request in seen), seen
    assert len(seen) <= elapsed / 5 + 2, (elapsed, seen)  # one held request per 5 s, not one a second


def test_the_client_runs_without_django_or_the_project(live_url, warm_worker):
    """Only the standard library and requests: importing Django or the service's packages fails here."""
    warm_worker("factorization")
    blocked = ["django", "rest_framework", "django_rq", "rq", "redis", "project", "factorize_app.jobs"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None  # any import of them raises ImportError\n"
        "from factorize_app import client\n"
        f"sys.exit(client.main(['--url', {live_url!r}, '408216']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [SEED_LINE]


def test_watch_prints_a_running_jobs_progress(live_url, start_worker):
    from sympy import nextprime

    hard = nextprime(10**19) * nextprime(3 * 10**20)  # seconds of ECM, reporting its curves
    worker = start_worker("factorization")
    result = run_client(live_url, "--watch", "--timeout", "8", str(hard))
    assert result.returncode == 2  # out of time, as asked: the job is still running
    assert f"{hard}: ECM, curve " in result.stderr and "%)" in result.stderr, result.stderr
    worker.stop(signal.SIGKILL)


def test_the_old_name_says_where_the_client_went_when_it_is_missing(tmp_path):
    """A copy of the service without client/ (and no factorize-client installed): one line, exit 2."""
    package = tmp_path / "factorize_app"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "client.py").write_text((ROOT / "factorize_app" / "client.py").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "factorize_app.client", "408216"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "python -m factorize_app.client: the client moved to the factorize-client package: "
        "`pip install ./client`, then run `factorize`"
    ]
