"""The Python API: `Client` submits inputs to any task type of a service, `Job` follows one job.

    from factorize_client import Client

    client = Client("http://localhost:8123")
    job = client.submit("factorization", {"number": 408216})
    job.result(timeout=60)  # {'number': 408216, 'factorization': [[2, 3], ...], ...}

Waiting is the server's long poll (`Prefer: wait=N`): a request held until the job is done, not
a loop of quick polls. Throttling (429) and outages (503) are waited out as `Retry-After` says.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from factorize_client import batches
from factorize_client.errors import ClientError, JobFailed, OutOfTime, ServiceError
from factorize_client.events import lines_of, parse
from factorize_client.transport import Gate, Transport, WaitNotice
from factorize_client.uploads import MultipartFile

DEFAULT_URL = "http://localhost:8123"
LONG_POLL = 30  # seconds one held request may wait (the server caps it at its MAX_WAIT)
STREAM_READ_TIMEOUT = 60.0  # the server sends a keep-alive at least every 15 s
POLL_EVERY = 1.0  # seconds between polls when the server can hold no more event streams
# The status body's bookkeeping; the rest is the job's input and result fields.
BOOKKEEPING = ("done", "job_id", "status", "error", "progress", "load")
DONE_WITHOUT_RESULT = ("failed", "canceled", "aborted", "invalid")


@dataclass(frozen=True)
class TaskInfo:
    """A task type the service serves, as its OpenAPI schema describes it."""

    name: str  # the type's name (also its queue's)
    path: str  # where to POST its inputs: /<path>, and /<path>/batch
    description: str
    input_schema: dict[str, Any] = field(repr=False)  # JSON schema of one input
    examples: tuple[dict[str, Any], ...] = field(default=(), repr=False)


def result_of(body: dict[str, Any]) -> dict[str, Any]:
    """The input and result fields of a status body, without its bookkeeping."""
    return {name: value for name, value in body.items() if name not in BOOKKEEPING}


class Job:
    """A job the service has accepted (or an input it refused: `status` "invalid", no id)."""

    def __init__(self, client: Client, body: dict[str, Any]):
        self.client = client
        self.id: str | None = body.get("job_id")
        self.last = body  # the last status body seen

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.last.get('status')}>"

    @property
    def done(self) -> bool:
        return bool(self.last.get("done"))

    def status(self, wait: int = 0) -> dict[str, Any]:
        """The job's status body now (`wait` > 0: once it is done, or after `wait` seconds)."""
        if self.id is None:
            return self.last
        response = self.client.transport().request("GET", f"/jobs/{self.id}", wait=wait)
        self.last = response.json()
        return self.last

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """The job's input and result fields once it has finished, waiting up to `timeout`
        seconds (None: as long as it takes) in long polls. Raises JobFailed when it ends any
        other way, OutOfTime when the timeout runs out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            left = LONG_POLL if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise OutOfTime(f"job {self.id} not done after {timeout:g} s: {self.last.get('status')}")
            started = time.monotonic()
            self.status(wait=max(1, min(LONG_POLL, int(left))))
            if not self.done and time.monotonic() - started < 1:  # a server that did not hold
                time.sleep(min(1.0, max(0.0, left - 1)))
        if self.last.get("status") != "finished":
            raise JobFailed(self.id, str(self.last.get("status")), error_of(self.last), self.last)
        return result_of(self.last)

    def events(self) -> Iterator[dict[str, Any]]:
        """The job's changes as they happen, from its event stream: each a status body (as
        `status()` answers) with the event's `id` (None for the first, the state when the stream
        opened, if nothing has happened to the job yet); the last is the done one. Each piece a
        streaming job yields comes as the body with that piece last in its `output` (the pieces
        so far). A dropped stream is resumed where it broke (`Last-Event-ID`)."""
        if self.id is None:
            yield self.last
            return
        transport, last_id = self.client.transport(), None
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            try:
                response = transport.request(
                    "GET", f"/jobs/{self.id}", headers=headers, stream=True, read_timeout=STREAM_READ_TIMEOUT, retries=0
                )
            except ServiceError as exc:
                if exc.status != 503:
                    raise
                yield from self.changes()  # the server holds all the streams it may: "poll instead"
                return
            if response.status_code == 204:  # the end was seen already
                return
            pause = 1.0
            try:
                for event in parse(lines_of(response.iter_content(chunk_size=None))):
                    if event.retry is not None:
                        pause = event.retry / 1000
                    if event.event == "output":  # a streamed piece: the body as it stands, with it
                        last_id = event.id or last_id
                        piece = json.loads(event.data)
                        self.last = {
                            **self.last,
                            "output": [*self.last.get("output", [])[: piece["index"]], piece["output"]],
                        }
                        yield {**self.last, "id": event.id}
                        continue
                    if event.event != "status":
                        continue
                    last_id = event.id or last_id
                    self.last = json.loads(event.data)
                    yield {**self.last, "id": event.id}
                    if self.done:
                        return
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                pass  # resumed below, from the last event seen
            finally:
                response.close()
            transport.sleep(pause)  # the stream ended before the done event: reconnect

    def changes(self) -> Iterator[dict[str, Any]]:
        """events() by polling, once a second, for a server that can open no more streams."""
        seen = None
        while True:
            body = self.status()
            if (body.get("status"), body.get("progress")) != seen:
                seen = (body.get("status"), body.get("progress"))
                yield {**body, "id": None}
            if self.done:
                return
            self.client.transport().sleep(POLL_EVERY)

    def cancel(self) -> dict[str, Any] | None:
        """Cancel the job (a queued one at once) or ask a running one to stop: None when that is
        done (or when only this client's interest in a job others want was withdrawn); the job's
        status body while a running job is being stopped (it ends `canceled` within a second).
        ServiceError 409 for a job already done."""
        if self.id is None:
            raise ClientError("an invalid input has no job to cancel")
        response = self.client.transport().request("DELETE", f"/jobs/{self.id}")
        if response.status_code == 204:
            return None
        self.last = response.json()
        return self.last


def error_of(body: dict[str, Any]) -> Any:
    return body.get("errors") if body.get("status") == "invalid" else body.get("error")


class Client:
    """A service at `url` (default $FACTORIZE_URL, else http://localhost:8123), with an API key
    (default $FACTORIZE_TOKEN). `on_wait(seconds, reason)` hears of every wait the server's
    limits or an outage impose; `timeout` bounds everything the client does, in seconds."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        retries: int = 3,
        timeout: float | None = None,
        on_wait: WaitNotice | None = None,
    ):
        self.url = (url or os.environ.get("FACTORIZE_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("FACTORIZE_TOKEN") or None
        self.retries = retries
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.gate = Gate(on_wait)
        self._local = threading.local()
        self._types: dict[str, TaskInfo] | None = None

    def transport(self) -> Transport:
        """This thread's connection to the service."""
        transport = getattr(self._local, "transport", None)
        if transport is None:
            transport = Transport(self.url, self.token, retries=self.retries, deadline=self.deadline, gate=self.gate)
            self._local.transport = transport
        return transport

    def types(self) -> dict[str, TaskInfo]:
        """The service's task types by name, read from its OpenAPI schema (once per client)."""
        if self._types is None:
            schema = self.transport().request("GET", "/api/schema/?format=json").json()
            self._types = task_types_of(schema)
        return self._types

    def path_of(self, type_path_or_name: str) -> str:
        """`/factorize` for "factorization" or "factorize", looked up in the service's schema; a
        path with its leading slash ("/factorize") is taken as it is, without a look-up."""
        if type_path_or_name.startswith("/"):
            return type_path_or_name.rstrip("/")
        wanted = type_path_or_name.strip("/")
        types = self.types()
        if wanted in types:
            return types[wanted].path
        if any(info.path == f"/{wanted}" for info in types.values()):
            return f"/{wanted}"
        known = ", ".join(sorted(types))
        raise ClientError(f"the service has no task type {type_path_or_name!r} (it has: {known})")

    def upload(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Upload a file (`POST /files`, streamed from disk): the service's answer, whose `id` any
        input's file field takes (`{"image": upload["id"]}`) until it expires."""
        with MultipartFile(path) as body:
            headers = {"Content-Type": body.content_type}
            return self.transport().request("POST", "/files", data=body, headers=headers, read_timeout=300).json()

    def submit(self, type_path_or_name: str, data: dict[str, Any], *, wait: int = 0) -> Job:
        """Submit one input (posting the same input again is a poll of the same job); `wait` > 0
        holds the answer until the job is done or `wait` seconds pass."""
        path = self.path_of(type_path_or_name)
        try:
            response = self.transport().request("POST", path, json=data, wait=wait)
        except ServiceError as exc:
            if exc.status == 400 and isinstance(exc.body, dict):  # the input, refused field by field
                return Job(self, {"done": True, "job_id": None, "status": "invalid", "errors": exc.body})
            raise
        return Job(self, response.json())

    def submit_many(self, type_path_or_name: str, items: Sequence[dict[str, Any]]) -> list[Job]:
        """Submit many inputs through the type's batch endpoint, a chunk per request and each
        item once, pacing to the server's submit limit; one Job per item, in order (an invalid
        item's has status "invalid" and its `errors`)."""
        path = self.path_of(type_path_or_name)
        bodies = batches.submit(self.transport(), path, list(items))
        return [Job(self, body) for body in bodies]

    def run_many(
        self,
        type_path_or_name: str,
        items: Sequence[dict[str, Any]],
        *,
        wait: int = LONG_POLL,
        on_done: batches.OnAnswer | None = None,
    ) -> list[dict[str, Any]]:
        """Submit many inputs and wait for all of them: each item's final status body, in order.
        A few chunks are in flight at once, each a batch request held until its items are done
        (`Prefer: wait`), so the queue stays fed and nothing is polled in a loop.
        `on_done(index, body)` is called as each item is done, from the runner's threads."""
        path = self.path_of(type_path_or_name)
        runner = batches.Runner(self.transport(), path, list(items), wait=wait, on_done=on_done)
        return runner.run()


def task_types_of(schema: dict[str, Any]) -> dict[str, TaskInfo]:
    """Each task type's submit operation (operationId `<name>_submit`) in an OpenAPI schema."""
    components = schema.get("components", {}).get("schemas", {})
    found: dict[str, TaskInfo] = {}
    for path, operations in schema.get("paths", {}).items():
        post = operations.get("post") if isinstance(operations, dict) else None
        operation_id = post.get("operationId", "") if isinstance(post, dict) else ""
        if not operation_id.endswith("_submit") or path.endswith("/batch"):
            continue
        content = post.get("requestBody", {}).get("content", {}).get("application/json", {})
        input_schema = content.get("schema", {})
        reference = input_schema.get("$ref", "")
        if reference.startswith("#/components/schemas/"):
            input_schema = components.get(reference.rsplit("/", 1)[1], input_schema)
        examples = [e.get("value") for e in content.get("examples", {}).values() if isinstance(e, dict)]
        examples += [content.get("example"), input_schema.get("example")]
        name = operation_id[: -len("_submit")]
        found[name] = TaskInfo(
            name=name,
            path=path,
            description=post.get("description", ""),
            input_schema=input_schema,
            examples=tuple(example for example in examples if isinstance(example, dict)),
        )
    return found
