"""`factorize`: submit inputs to any task type of a service and print each result as it is done.

    factorize 408216 1000003                        # factor numbers (also `-`, --file F, stdin)
    seq 2 10000 | factorize                         # one number a line; `#` starts a comment
    factorize --type digits --json '{"pixels": [...]}'
    factorize --type digits --file image=digit.png   # a file field: uploaded (POST /files), then its id sent
    factorize --type primes < inputs.jsonl           # JSON Lines: one input a line
    factorize --types                                # the service's task types
    factorize --watch --job factorization-…          # follow a job's progress
    factorize --type file-maker --json '{...}' --download out/   # save file results in out/

Numbers print `N = p^e ...` as each is done; JSON inputs print one JSON line each, in input order.
Exit status: 0 when every job finished; 1 when any failed, was canceled or invalid; 2 for usage
errors, an unreachable or failing service, or --timeout running out.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from factorize_client import batches, downloads
from factorize_client.api import DEFAULT_URL, Client, Job
from factorize_client.errors import ClientError, OutOfTime, ServiceError
from factorize_client.inputs import BadInput, file_fields, json_lines, json_number, json_object, tokens
from factorize_client.progress import Progress
from factorize_client.reporting import Reporter

PROG = "factorize"
FACTORIZATION_PATH = "/factorize"  # the default type's path, so numbers need no schema look-up
RANDOM_MAX = 2**20  # --random draws from 2..RANDOM_MAX, as the original example's client did
STREAMS = 8  # event streams followed at once (--watch, --job)


def follow(client: Client, path: str, items: list[Any], job_ids: list[str], reporter: Reporter, watch: bool) -> None:
    """--watch and --job: each job followed through its event stream, STREAMS at once. An input
    is submitted by the thread about to follow it, so no job sits in the queue unpolled (where
    it would expire) while the streams before it are still open."""
    events: queue.Queue[tuple[int, dict[str, Any] | BaseException]] = queue.Queue()
    todo: queue.Queue[int] = queue.Queue()
    total = len(items) + len(job_ids)
    for index in range(total):
        todo.put(index)

    def stream() -> None:
        while True:
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:
                if index < len(items):
                    job = client.submit(path, items[index])
                else:
                    job = Job(client, {"job_id": job_ids[index - len(items)], "done": False})
                for event in job.events():
                    events.put((index, event))
            except BaseException as exc:  # handed to the main thread
                events.put((index, exc))
                return

    for _ in range(min(STREAMS, total)):
        threading.Thread(target=stream, daemon=True).start()
    left = total
    while left:
        try:
            index, event = events.get(timeout=min(1.0, client.transport().remaining()))
        except queue.Empty:
            continue
        if isinstance(event, BaseException):
            raise event
        if event.get("done"):
            if watch and isinstance(event.get("output"), list):
                reporter.output(index, event["output"])  # any piece not printed yet
            reporter.done(index, event)
            left -= 1
        elif watch:
            reporter.running(index, event)


def gather(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[list[Any], list[str]]:
    """The inputs and their labels: numbers (arguments, --file, --random, stdin) for factorization,
    JSON objects (--json, else JSON Lines on stdin) for any type."""
    stdin_usable = sys.stdin is not None and not sys.stdin.isatty()
    args.file_fields, args.file = file_fields(args.file)
    numbers_given = bool(args.numbers or args.file or args.random)
    if args.file_fields and not args.type:
        parser.error("--file FIELD=PATH is a file field of another type's input: name the type with --type")
    if numbers_given and args.type and args.type.strip("/") in ("factorization", FACTORIZATION_PATH.strip("/")):
        args.type = None  # factorization named, and numbers given as without --type
    if args.json or args.type:
        if numbers_given:
            parser.error("numbers, --file and --random are factorization's: give other types' inputs with --json")
        try:
            if args.json:
                items = [json_object(text, "--json") for text in args.json]
            else:
                items = list(json_lines(sys.stdin, "stdin")) if stdin_usable and not args.file_fields else []
        except BadInput as exc:
            parser.error(str(exc))
        if args.file_fields:  # the files join every input given, or make one on their own
            items = [{**item, **args.file_fields} for item in items or [{}]]
        return items, [f"#{index + 1}" for index in range(len(items))]
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
    if not (args.numbers or args.file or args.random or args.job) and stdin_usable:
        numbers.extend(tokens(sys.stdin))
    return [{"number": json_number(token)} for token in numbers], numbers


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    items, labels = gather(args, parser)
    if not items and not args.job:
        if args.json or args.type:
            parser.error("no inputs: give them with --json, or pipe them in as JSON Lines")
        parser.error("no numbers: give them as arguments, with --file F or --random N, or pipe them in")
    client = Client(args.url, args.token, retries=args.retries, timeout=args.timeout)
    labels += args.job
    numbers = not (args.json or args.type)
    saving = Saving(client, Path(args.download)) if args.download else None
    progress = Progress(len(labels), sys.stderr, enabled=not args.no_progress)
    reporter = Reporter(labels, numbers, progress, saving.save if saving else None)
    client.gate.notice = reporter.waiting
    started = time.monotonic()
    try:
        path = client.path_of(args.type) if args.type else FACTORIZATION_PATH
        if args.file_fields:
            uploaded = {name: upload(client, file, parser) for name, file in args.file_fields.items()}
            items = [{**item, **uploaded} for item in items]
        if args.watch or args.job:
            follow(client, path, items, args.job, reporter, args.watch)
        else:
            runner = batches.Runner(
                client.transport(), path, items, wait=args.wait, batch_size=args.batch_size, on_done=reporter.done
            )
            runner.run()
    except OutOfTime:
        raise ClientError(
            f"timed out after {args.timeout:g} s: {reporter.outcomes.total()} of {len(labels)} done"
        ) from None
    finally:
        reporter.progress.clear()
    outcomes = reporter.outcomes
    print(
        f"{len(labels)} {'numbers' if numbers else 'jobs'} in {time.monotonic() - started:.1f} s: "
        f"{outcomes['finished']} finished, {outcomes['failed']} failed, {outcomes['invalid']} invalid",
        file=sys.stderr,
    )
    return 0 if outcomes["finished"] == len(labels) and not (saving and saving.failed) else 1


class Saving:
    """--download DIR: each done job's files saved in DIR as it is done (downloads.py)."""

    def __init__(self, client: Client, directory: Path):
        self.client, self.directory = client, directory
        self.failed = 0

    def save(self, body: dict[str, Any]) -> list[str]:
        notes = []
        for file in downloads.files_in(body):
            try:
                notes.append(f"saved {downloads.download(self.client.transport(), file, self.directory)}")
            except ClientError as exc:  # counted in the exit status; the other files are still saved
                self.failed += 1
                notes.append(f"could not save {file.get('id')}: {exc}")
        return notes


def upload(client: Client, path: str, parser: argparse.ArgumentParser) -> str:
    """The id of `path` uploaded (POST /files)."""
    if not os.path.isfile(path):
        parser.error(f"--file: no file {path}")
    return client.upload(path)["id"]


def list_types(client: Client) -> int:
    for name, info in sorted(client.types().items()):
        print(f"{name}\t{info.path}\t{info.description}")
    return 0


def cancel(client: Client, job_ids: list[str]) -> int:
    status = 0
    for job_id in job_ids:
        try:
            body = Job(client, {"job_id": job_id, "done": False}).cancel()
        except ServiceError as exc:
            if exc.status not in (404, 409):
                raise
            print(f"{job_id}: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{job_id}: " + ("canceled" if body is None else f"stopping ({body.get('status')})"))
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Submit inputs to a factorize service (any task type it serves) and print each "
        "result as it is done. Exit status: 0 all finished, 1 some failed or invalid, 2 usage "
        "error, service unreachable or --timeout.",
    )
    add = parser.add_argument
    add("numbers", nargs="*", metavar="N", help="numbers to factor; `-` reads them from stdin")
    add(
        "--url",
        default=os.environ.get("FACTORIZE_URL") or DEFAULT_URL,
        help="the service (default: $FACTORIZE_URL or %(default)s)",
    )
    add("--token", default=os.environ.get("FACTORIZE_TOKEN"), help="your API key (default: $FACTORIZE_TOKEN)")
    add("-t", "--type", metavar="NAME", help="the task type, by name or path (default: factorization); see --types")
    add(
        "-j",
        "--json",
        action="append",
        default=[],
        metavar="OBJECT",
        help="one input as a JSON object (repeatable); without it, --type reads JSON Lines from stdin",
    )
    add(
        "-f",
        "--file",
        action="append",
        default=[],
        metavar="F",
        help="read numbers from F (`-`: stdin), one a line; `#` comments; or, with --type, FIELD=PATH: "
        "a file for that field of the input, uploaded first (repeatable)",
    )
    add("--random", type=positive_int, metavar="N", help=f"add N random numbers in 2..{RANDOM_MAX}")
    add("--job", action="append", default=[], metavar="ID", help="wait for a job submitted before, by id (repeatable)")
    add("--watch", action="store_true",
        help="follow each job's event stream, printing its progress and streamed outputs on stderr")  # fmt: skip
    add("--cancel", action="append", default=[], metavar="ID", help="cancel a job by id (repeatable), then exit")
    add("--types", action="store_true", help="list the service's task types, then exit")
    add(
        "--batch-size",
        type=positive_int,
        metavar="N",
        default=batches.BATCH_SIZE,
        help="inputs per request (default %(default)s; the server's MAX_BATCH caps it)",
    )
    add(
        "--wait",
        type=non_negative_int,
        metavar="S",
        default=30,
        help="seconds the server may hold a request until its jobs are done "
        "(Prefer: wait; default %(default)s, capped by its MAX_WAIT)",
    )
    add("--timeout", type=positive_float, metavar="S", help="give up (exit 2) after this many seconds overall")
    add(
        "--retries",
        type=non_negative_int,
        metavar="N",
        default=3,
        help="retries of a request while the service is unavailable (5xx, a dropped connection; "
        "default %(default)s); the server's rate limits (429) are always waited out",
    )
    add("--no-progress", action="store_true", help="no progress bar or progress lines on stderr")
    add(
        "--download",
        metavar="DIR",
        help="save each job's file results (and results too large to answer inline) in DIR as they are done",
    )
    return parser


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


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser()
    if prog:
        parser.prog = prog
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    if url.scheme not in ("http", "https") or not url.netloc:
        parser.error(f"--url must be an http:// or https:// address, not {args.url!r}")
    try:
        if args.types or args.cancel:
            client = Client(args.url, args.token, retries=args.retries, timeout=args.timeout)
            return list_types(client) if args.types else cancel(client, args.cancel)
        return run(args, parser)
    except ClientError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: stop quietly, and keep Python from complaining at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
