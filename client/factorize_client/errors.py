"""The client's exceptions: one base class, so `except ClientError` catches everything it raises."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Anything the client cannot do; the message is one line, fit to show a user as it is."""


class Unreachable(ClientError):
    """The service never answered at this URL (a wrong URL, or the service is not up)."""


class OutOfTime(ClientError):
    """A timeout given to the client ran out before the work was done."""


class ServiceError(ClientError):
    """The service refused a request: its HTTP status and its `detail` (or the whole body)."""

    def __init__(self, message: str, *, status: int, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


class JobFailed(ClientError):
    """A job ended without a result: `failed`, `canceled`, `aborted`, or its input was `invalid`."""

    def __init__(self, job_id: str | None, status: str, error: Any, body: dict[str, Any]):
        super().__init__(f"job {job_id or '(not created)'} {status}: {error}")
        self.job_id = job_id
        self.status = status
        self.error = error
        self.body = body
