"""The service's command-line client: submit numbers in batches, print each factorization as it finishes.

    python -m factorize_app.client --url http://localhost:8123 408216 1000003
    python -m factorize_app.client --random 20        # the original example's polling client
    seq 2 5000 | python -m factorize_app.client -     # one number a line; `#` starts a comment

It needs only `requests` (`pip install requests`): no Django and nothing else from this project,
so it runs on any machine that can reach the service, and can be copied there on its own.

How it talks to the service (`POST /factorize/batch`, submit-or-poll for many numbers at once):
the first round submits every number, in chunks of --batch-size; each later round re-posts the
numbers that are not done yet. Re-posting is the poll (a job's id derives from its input), and it
keeps the queued jobs alive (they expire when nobody polls them). The first chunk of a round
carries `Prefer: wait=W`, so the server holds that answer until the chunk is done or W seconds
pass, instead of the client sleeping; the other chunks are quick polls that collect whatever
finished. A round that finished nothing in under a second (a server that ignores Prefer) is
stretched to a second, so the client never spins.

Exit status: 0 when every job finished; 1 when any failed or was invalid; 2 for usage errors,
an unreachable or failing service, or --timeout running out.
"""

from __future__ import annotations

import argparse
import email.utils
import math
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

import requests

DEFAULT_URL = "http://localhost:8123"
RANDOM_MAX = 2**20  # --random draws from 2..RANDOM_MAX, as the original example's client did
MIN_ROUND = 1.0  # seconds: a round that finished nothing is stretched to this long
WATCH_WAIT = 1  # --watch: the longest a poll is held, so progress is seen within a second
CONNECT_TIMEOUT = 10.0
READ_MARGIN = 30.0  # seconds a held request may take beyond its Prefer: wait
PLAIN_PROGRESS_EVERY = 10.0  # seconds between `progress:` lines when stderr is not a terminal
JSON_SAFE_INT = 2**53  # larger numbers go as digit strings, which every JSON parser keeps exact
PROG = "factorize-client"


class ClientError(Exception):
    """Ends the run with exit status 2 and this one-line message (never a traceback)."""


class OutOfTime(ClientError):
    """--timeout ran out."""


@dataclass
class Item:
    """One number of the input, as the user wrote it, and its outcome once done."""

    token: str
    value: int | str  # what goes into the JSON body
    outcome: str | None = None  # "finished", "failed" or "invalid"


def json_number(token: str) -> int | str:
    """An integer that JSON keeps exact, else the text itself: the service accepts digit strings,
    and answers anything else with an invalid item that names the problem."""
    if re.fullmatch(r"[+-]?[0-9]{1,16}", token) and abs(int(token)) < JSON_SAFE_INT:
        return int(token)
    return token


def tokens(lines: Iterable[str]) -> Iterator[str]:
    """Numbers from text: one a line (blank-separated ones are fine too); `#` starts a comment."""
    for line in lines:
        yield from line.split("#", 1)[0].split()


def retry_after(response: requests.Response | None, default: float) -> float:
    """Seconds the `Retry-After` header asks for (delta-seconds or an HTTP date), else `default`."""
    value = response.headers.get("Retry-After", "").strip() if response is not None else ""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


def describe(response: requests.Response) -> str:
    """The service's error body in one short line: its `detail`, else the JSON or text itself."""
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())
    else:
        text = str(body["detail"]) if isinstance(body, dict) and "detail" in body else str(body)
    return text[:300] or response.reason or "no details"


def short_reason(exc: Exception) -> str:
    """`Connection refused` rather than requests' three nested exception reprs."""
    match = re.search(r"\[Errno -?\d+\] [^'\")]+", str(exc))
    return match.group(0) if match else type(exc).__name__


class BatchClient:
    """`POST /factorize/batch`, made robust: throttling (429) and outages (503, connection errors)
    are waited out (outages a bounded number of times), a body too large (413) is split in two;
    anything else ends the run with the server's message."""

    def __init__(self, url: str, retries: int, timeout: float | None, token: str | None = None):
        self.url = url.rstrip("/")
        self.endpoint = f"{self.url}/factorize/batch"
        self.retries = retries
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.max_batch: int | None = None  # lowered when the server answers 413
        self.reached = False  # once the service has answered, a lost connection is retried
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": PROG})
        self.has_token = bool(token)
        if token:  # an API key: the service serves clients in turn by key (else by address)
            self.session.headers["Authorization"] = f"Bearer {token}"

    def remaining(self) -> float:
        """Seconds left before --timeout; raises OutOfTime once there are none."""
        if self.deadline is None:
            return math.inf
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise OutOfTime(f"timed out after {self.timeout:g} s")
        return left

    def pause(self, seconds: float) -> None:
        time.sleep(min(seconds, self.remaining()))
        self.remaining()

    def post(self, values: list[int | str], wait: int = 0) -> list[dict[str, Any]]:
        """One status object per value, in order; `wait` > 0 asks the server to hold until all are done."""
        failures = 0
        while True:
            left = self.remaining()
            hold = wait if left == math.inf else min(wait, int(left))
            headers = {"Prefer": f"wait={hold}"} if hold > 0 else {}
            response = None
            try:
                response = self.session.post(
                    self.endpoint,
                    json={"numbers": values},
                    headers=headers,
                    timeout=(min(CONNECT_TIMEOUT, left), min(hold + READ_MARGIN, left)),
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                self.remaining()  # raises if it was --timeout that cut the request short
                if isinstance(exc, requests.ReadTimeout):
                    problem = f"{self.url} did not answer in time"
                else:
                    problem = f"cannot reach {self.url}: {short_reason(exc)}"
                    if not self.reached:  # nothing ever answered there: a wrong URL, or the service is not up
                        raise ClientError(problem) from None
            except requests.RequestException as exc:
                raise ClientError(f"cannot talk to {self.url}: {exc}") from None
            else:
                self.reached = True
                code = response.status_code
                if code == 200:
                    return self.results(response, len(values))
                if code == 429:  # throttled: the server says when to come back
                    self.pause(retry_after(response, 1.0))
                    continue
                if code == 413 and len(values) > 1:
                    half = len(values) // 2
                    self.max_batch = half
                    return self.post(values[:half], wait) + self.post(values[half:])
                if code == 401:
                    hint = "check --token or FACTORIZE_TOKEN" if self.has_token else "give one with --token"
                    raise ClientError(f"the service wants a valid API key (401): {describe(response)} ({hint})")
                if code == 404:
                    raise ClientError(f"{self.endpoint} does not exist (404): is this a factorize service?")
                if code < 500:
                    raise ClientError(f"the service refused the request ({code}): {describe(response)}")
                problem = f"the service is unavailable ({code}): {describe(response)}"
            failures += 1
            if failures > self.retries:
                raise ClientError(problem)
            self.pause(retry_after(response, float(min(2 ** (failures - 1), 10))))

    def results(self, response: requests.Response, count: int) -> list[dict[str, Any]]:
        try:
            results = response.json()["results"]
        except (ValueError, KeyError, TypeError):
            raise ClientError(f"unexpected answer from {self.endpoint}: {describe(response)}") from None
        if not isinstance(results, list) or len(results) != count or not all(isinstance(r, dict) for r in results):
            raise ClientError(f"unexpected answer from {self.endpoint}: not {count} status objects")
        return results


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """done/total, rate and ETA on stderr. On a terminal: one line redrawn in place with `\\r`
    (padded with blanks, no escape codes, so any terminal shows it right). Otherwise a plain
    `progress:` line at most every PLAIN_PROGRESS_EVERY seconds, nothing a log file would garble."""

    def __init__(self, total: int, stream: TextIO, enabled: bool = True):
        self.total = total
        self.stream = stream
        self.live = enabled and stream.isatty()
        self.plain = enabled and not self.live
        self.done = 0
        self.baseline: tuple[float, int] | None = None  # the first answer: results cached before it don't count
        self.shown = 0  # width of the line on screen
        self.last_plain = time.monotonic()
        self.printed = 0  # the count the last `progress:` line showed

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.baseline is None:
            self.baseline = (now, done)
        self.done = done
        if self.live:
            self.draw(self.line(now))
        elif self.plain and self.printed < done < self.total and now - self.last_plain >= PLAIN_PROGRESS_EVERY:
            print(f"progress: {done}/{self.total} done", file=self.stream, flush=True)
            self.last_plain, self.printed = now, done

    def rate(self, now: float) -> float | None:
        """Jobs per second since the first answer."""
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
        """Blank the bar, before a result or a message is written to the same terminal."""
        if self.live and self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.stream.flush()
            self.shown = 0

    def note(self, line: str) -> None:
        """A line on stderr (--watch's progress), the bar stepping aside."""
        self.clear()
        print(line, file=self.stream, flush=True)

    def emit(self, line: str) -> None:
        """A result on stdout; the bar steps aside when both share the terminal (redrawn by update)."""
        if sys.stdout.isatty():
            self.clear()
        print(line, flush=True)


def progress_line(item: Item, answer: dict[str, Any]) -> str | None:
    """`<N>: <what its handler reports> (<percent>)` for a running item that reports progress."""
    progress = answer.get("progress")
    if not isinstance(progress, dict):
        return None
    fraction = progress.get("fraction")
    done = f" ({100 * fraction:.0f}%)" if isinstance(fraction, (int, float)) else ""
    return f"{item.token}: {progress.get('message') or 'running'}{done}"


def result_line(item: Item, answer: dict[str, Any]) -> tuple[str, str]:
    """The outcome of a done item and its output line: `408216 = 2^3 3^1 73^1 233^1`, `N failed: ...`
    or `N invalid: ...`."""
    status = answer.get("status")
    if status == "invalid":
        errors = answer.get("errors") or {}
        messages = errors.values() if isinstance(errors, dict) else [errors]
        text = "; ".join(str(m) for entry in messages for m in (entry if isinstance(entry, list) else [entry]))
        return "invalid", f"{item.token} invalid: {text or 'rejected by the service'}"
    label = answer.get("number") if answer.get("number") is not None else item.token
    if status == "finished":
        return "finished", f"{label} = {answer.get('factorization_str')}"
    return "failed", f"{label} failed: {answer.get('error') or status}"


def run(args: argparse.Namespace, numbers: list[str]) -> int:
    """Submit, then poll in rounds until every number is done; the exit status."""
    items = [Item(token, json_number(token)) for token in numbers]
    client = BatchClient(args.url, args.retries, args.timeout, args.token)
    progress = Progress(len(items), sys.stderr, enabled=not args.no_progress)
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    pending = list(range(len(items)))
    submitted = False
    watched: dict[int, str] = {}  # --watch: each running item's last progress line shown
    # Watching, the server holds a poll at most a second, so progress shows as it changes.
    wait = min(args.wait, WATCH_WAIT) if args.watch else args.wait
    try:
        while pending:
            round_started, before = time.monotonic(), len(pending)
            size = min(args.batch_size, client.max_batch or args.batch_size)
            chunks = [pending[i : i + size] for i in range(0, len(pending), size)]
            for index, chunk in enumerate(chunks):
                # Hold on the oldest chunk, once every chunk has been submitted at least once.
                hold = index == 0 and (submitted or len(chunks) == 1)
                answers = client.post([items[i].value for i in chunk], wait if hold else 0)
                for i, answer in zip(chunk, answers, strict=True):
                    if answer.get("done"):
                        items[i].outcome, line = result_line(items[i], answer)
                        outcomes[items[i].outcome] += 1
                        progress.emit(line)
                    elif args.watch and (line := progress_line(items[i], answer)) and watched.get(i) != line:
                        watched[i] = line
                        progress.note(line)
                progress.update(outcomes.total())
            submitted = True
            pending = [i for i in pending if items[i].outcome is None]
            idle = time.monotonic() - round_started
            if pending and len(pending) == before and idle < MIN_ROUND:
                client.pause(MIN_ROUND - idle)  # the server did not hold: never a busy loop
    except OutOfTime as exc:
        raise ClientError(f"{exc}: {outcomes.total()} of {len(items)} done") from None
    finally:
        progress.clear()
    elapsed = time.monotonic() - started
    print(
        f"{len(items)} numbers in {elapsed:.1f} s: {outcomes['finished']} finished, "
        f"{outcomes['failed']} failed, {outcomes['invalid']} invalid",
        file=sys.stderr,
    )
    return 0 if outcomes["finished"] == len(items) else 1


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__spec__.name if __spec__ else 'factorize_app.client'}",
        description="Factor integers with a factorize service: submits them in batches, waits with "
        "Prefer: wait, prints `N = p^e ...` for each as it finishes. Exit status: 0 all finished, "
        "1 some failed or invalid, 2 usage error, service unreachable or --timeout.",
    )
    parser.add_argument("numbers", nargs="*", metavar="N", help="numbers to factor; `-` reads them from stdin")
    parser.add_argument(
        "--url",
        default=os.environ.get("FACTORIZE_URL", DEFAULT_URL),
        help=f"the service (default: $FACTORIZE_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "-f",
        "--file",
        action="append",
        default=[],
        metavar="F",
        help="read numbers from F (`-`: stdin), one a line; blank lines and `#` comments are ignored",
    )
    parser.add_argument("--random", type=positive_int, metavar="N", help=f"add N random numbers in 2..{RANDOM_MAX}")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        default=500,
        help="numbers per request (default 500; the server's MAX_BATCH caps it)",
    )
    parser.add_argument(
        "--wait",
        type=non_negative_int,
        metavar="S",
        default=10,
        help="seconds the server may hold a poll (Prefer: wait; default 10, keep it under the service's JOB_TTL)",
    )
    parser.add_argument(
        "--timeout", type=positive_float, metavar="S", help="give up (exit 2) after this many seconds overall"
    )
    parser.add_argument(
        "--retries",
        type=non_negative_int,
        metavar="N",
        default=3,
        help="retries of a request when the service is unavailable (5xx) or the connection drops "
        "once it has answered (default 3); a service that never answered ends the run at once",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines on stderr")
    parser.add_argument(
        "--watch",
        action="store_true",
        help="print each running job's progress on stderr as its handler reports it (polls every second)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("FACTORIZE_TOKEN"),
        help="your API key (`manage.py create_api_key` or the admin makes one), needed where the service "
        "requires keys and counted per key in its fair order and limits (default: $FACTORIZE_TOKEN)",
    )
    return parser


def gather_numbers(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """Numbers from the arguments, --file, --random and stdin, in that order."""
    numbers: list[str] = []
    for arg in args.numbers:
        numbers.extend(tokens(sys.stdin) if arg == "-" else [arg])
    for path in args.file:
        if path == "-":
            numbers.extend(tokens(sys.stdin))
            continue
        try:
            with open(path, encoding="utf-8", errors="replace") as lines:
                numbers.extend(tokens(lines))
        except OSError as exc:
            parser.error(f"cannot read {path}: {exc.strerror}")
    if args.random:
        numbers.extend(str(random.randint(2, RANDOM_MAX)) for _ in range(args.random))
    if not (args.numbers or args.file or args.random):
        if sys.stdin is None or sys.stdin.isatty():
            parser.error("no numbers: give them as arguments, with --file F or --random N, or pipe them in")
        numbers.extend(tokens(sys.stdin))
    if not numbers:
        parser.error("no numbers to factor in the input")
    return numbers


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    if url.scheme not in ("http", "https") or not url.netloc:
        parser.error(f"--url must be an http:// or https:// address, not {args.url!r}")
    numbers = gather_numbers(args, parser)
    try:
        return run(args, numbers)
    except ClientError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: stop quietly, and keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
