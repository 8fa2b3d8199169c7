"""HTTP to the service, made robust: the server's limits (429) and outages (503, a dropped
connection) are waited out for as long as its `Retry-After` says, and every wait is announced.

One `Gate` is shared by every `Transport` of a client (one per thread: a `requests.Session` is
not meant to be shared between threads), so when one request meets a limit, the others hold
back too, and the user reads one "waiting ..." line, not one per thread.
"""

from __future__ import annotations

import email.utils
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from factorize_client.errors import OutOfTime, ServiceError, Unreachable

CONNECT_TIMEOUT = 10.0
READ_MARGIN = 30.0  # seconds a held request may take beyond its Prefer: wait
USER_AGENT = "factorize-client/0.1"

# What to do with an announced wait: the CLI prints it; the Python API's default is silence.
WaitNotice = Callable[[float, str], None]


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


def body_of(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def describe(response: requests.Response) -> str:
    """The service's error body in one short line: its `detail`, else the JSON or text itself."""
    body = body_of(response)
    if body is None:
        text = " ".join(response.text.split())
    else:
        text = str(body["detail"]) if isinstance(body, dict) and "detail" in body else str(body)
    return text[:300] or response.reason or "no details"


def short_reason(exc: Exception) -> str:
    """`Connection refused` rather than requests' three nested exception reprs."""
    match = re.search(r"\[Errno -?\d+\] [^'\")]+", str(exc))
    return match.group(0) if match else type(exc).__name__


def limit_reason(response: requests.Response, method: str) -> str:
    """Which of the server's limits a 429 is: a cap it names (`MAX_QUEUED_PER_CLIENT`), else the
    request rate of its kind (POST and DELETE count as submits, reads as polls)."""
    body = body_of(response)
    if isinstance(body, dict) and isinstance(body.get("limit"), str):
        return f"the server's {body['limit']} limit (429)"
    return f"the server's {'submit' if method in ('POST', 'DELETE') else 'poll'} limit (429)"


class Gate:
    """When the service may next be asked, and the most items a batch of it may carry, shared by
    all threads of one client."""

    def __init__(self, notice: WaitNotice | None = None):
        self.lock = threading.Lock()
        self.open_at = 0.0  # time.monotonic() before which nobody sends
        self.notice = notice
        self.max_batch: int | None = None  # learnt from a batch refused as too large

    def close_for(self, seconds: float, reason: str) -> None:
        """Nobody sends for `seconds`; announced once, not by every thread that meets the limit."""
        with self.lock:
            until = time.monotonic() + seconds
            announce = until > self.open_at + 0.5
            self.open_at = max(self.open_at, until)
        if announce and self.notice is not None:
            self.notice(seconds, reason)

    def delay(self) -> float:
        with self.lock:
            return max(0.0, self.open_at - time.monotonic())


class Transport:
    """Requests to one service with one session; `deadline` (a time.monotonic() value) bounds them all."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        retries: int = 3,
        deadline: float | None = None,
        gate: Gate | None = None,
    ):
        self.url = url.rstrip("/")
        self.token = token
        self.retries = retries
        self.deadline = deadline
        self.gate = gate or Gate()
        self.reached = False  # once the service has answered, a lost connection is waited out
        self.session = requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})
        if token:  # an API key: the service counts fair order, limits and ownership per key
            self.session.headers["Authorization"] = f"Bearer {token}"

    def clone(self) -> Transport:
        """Another transport for another thread: its own session, the same gate and deadline."""
        twin = Transport(self.url, self.token, retries=self.retries, deadline=self.deadline, gate=self.gate)
        twin.reached = self.reached
        return twin

    def remaining(self) -> float:
        """Seconds left before the deadline; raises OutOfTime once there are none."""
        if self.deadline is None:
            return math.inf
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise OutOfTime("timed out")
        return left

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self.remaining())))
        self.remaining()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Any = None,
        wait: int = 0,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        read_timeout: float | None = None,
        split_after: int | None = None,
        retries: int | None = None,
    ) -> requests.Response:
        """One request, repeated through the server's limits and outages; the answer when it is
        below 400, else ServiceError. `wait` > 0 sends `Prefer: wait=<wait>` (cut to the time
        left). With `split_after`, that many 429s in a row raise ServiceError(429) instead of
        waiting again: a batch bigger than the whole allowance must be split by the caller.
        `retries` overrides the transport's own for this request. `data`, a body to stream (a
        file-like object with a length), is rewound before each attempt."""
        failures = throttled = 0
        while True:
            self.sleep(self.gate.delay())
            left = self.remaining()
            hold = wait if left == math.inf else min(wait, int(left))
            sent = dict(headers or {})
            if hold > 0:
                sent["Prefer"] = f"wait={hold}"
            reading = read_timeout if read_timeout is not None else hold + READ_MARGIN
            response = None
            if data is not None:
                data.seek(0)
            try:
                response = self.session.request(
                    method,
                    f"{self.url}{path}",
                    json=json,
                    data=data,
                    headers=sent,
                    stream=stream,
                    timeout=(min(CONNECT_TIMEOUT, left), min(reading, left)),
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                self.remaining()  # raises if it was the deadline that cut the request short
                if isinstance(exc, requests.ReadTimeout):
                    problem = f"{self.url} did not answer in time"
                else:
                    problem = f"cannot reach {self.url}: {short_reason(exc)}"
                    if not self.reached:  # nothing ever answered there: a wrong URL, or a service not up
                        raise Unreachable(problem) from None
            except requests.RequestException as exc:
                raise Unreachable(f"cannot talk to {self.url}: {exc}") from None
            else:
                self.reached = True
                code = response.status_code
                if code < 400:
                    return response
                if code == 429:
                    throttled += 1
                    if split_after is not None and throttled >= split_after:
                        raise ServiceError(describe(response), status=429, body=body_of(response))
                    # At least half a second: a window's last fraction of a second reads as 0.
                    self.gate.close_for(max(0.5, retry_after(response, 1.0)), limit_reason(response, method))
                    continue
                if code < 500 or code == 501:
                    raise self.refusal(response, path)
                problem = f"the service is unavailable ({code}): {describe(response)}"
            failures += 1
            if failures > (self.retries if retries is None else retries):
                raise ServiceError(problem, status=response.status_code if response is not None else 0)
            pause = retry_after(response, float(min(2 ** (failures - 1), 10)))
            self.gate.close_for(pause, problem)

    def refusal(self, response: requests.Response, path: str) -> ServiceError:
        """A 4xx as one line that says what to do about it."""
        code, detail = response.status_code, describe(response)
        if code == 401:
            hint = "check --token or FACTORIZE_TOKEN" if self.token else "give one with --token or FACTORIZE_TOKEN"
            message = f"the service wants a valid API key (401): {detail} ({hint})"
        elif code == 404:
            message = f"{self.url}{path}: not found (404): {detail}"
        else:
            message = f"the service refused the request ({code}): {detail}"
        return ServiceError(message, status=code, body=body_of(response))
