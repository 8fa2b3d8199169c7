"""The job service's vocabulary, shared by its client and worker sides: job statuses, what a
client sees of a job (JobState), a client's allowance (RateLimit), the queue order, the
duration histogram's buckets and the one-line description of a failure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from rq.job import JobStatus as RQStatus

from factorize_app.jobs import result_files
from factorize_app.tasks import TaskType

# Plain strings: RQ's JobStatus enum hashes by member name, so it does not mix with str in sets.
QUEUED, STARTED, FINISHED, FAILED = "queued", "started", "finished", "failed"
# Stopped on request (DELETE, or its Cancel-After deadline while running): RQ's own word.
CANCELED = RQStatus.CANCELED.value
# Its Cancel-After deadline passed while it was still queued: it never ran.
ABORTED = "aborted"
ABORTED_ERROR = "aborted: its Cancel-After deadline passed before it started"
CANCELED_ERROR = "canceled"
DEADLINE_CANCELED_ERROR = "canceled: its Cancel-After deadline passed"
DONE_STATUSES = {FINISHED, FAILED, RQStatus.STOPPED.value, CANCELED, ABORTED}
# A job in one of these may be retried (POST /jobs/<id>/retry).
RETRYABLE = {FAILED, CANCELED, ABORTED}
# Upper bounds (seconds) of the job duration histogram's buckets.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


@dataclass(frozen=True)
class JobState:
    """What a client sees of one job."""

    job_id: str | None
    task_name: str
    status: str
    input: dict[str, Any]
    result: dict[str, Any] | None = None
    error: str | None = None
    load: int | None = None
    # While it runs, what its handler last reported: {"fraction": 0..1 or None, "message": str}.
    progress: dict[str, Any] | None = None
    # A streaming job's output so far (jobs/outputs.py): its pieces in order; None if it streamed none.
    output: list[Any] | None = None

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES


@dataclass(frozen=True)
class RateLimit:
    """A client's allowance: `limit` requests per `window` seconds, counted under `scope`; `cost`
    is what the request at hand counts (a batch's items)."""

    scope: str
    client: str
    limit: int
    window: int
    cost: int = 1


@dataclass(frozen=True)
class ClientLimits:
    """A client's own caps (an API key's overrides); None: the settings' defaults."""

    max_queued: int | None = None
    max_running: int | None = None
    redis_bytes: int | None = None  # its budget of Redis memory (jobs/budgets.py)

    @property
    def queued(self) -> int:
        return settings.MAX_QUEUED_PER_CLIENT if self.max_queued is None else self.max_queued


def status_body(task_type: TaskType, state: JobState, *, base_url: str = "") -> dict[str, Any]:
    """What a client is told of a job, however it asks (a poll, a stream, a webhook): `{"done",
    <input fields>, <result fields or null>, "load", "job_id", "status", "error", "progress"}`,
    `result_file` for a result stored as a file, and `"output"` (its pieces so far) for a job that
    streamed some. `base_url`: the request's scheme and host, for the URLs of files
    (result_files.file_object)."""
    result = result_files.shown(task_type, state.result, base_url=base_url) if state.result else {}
    body = {
        "done": state.done,
        **state.input,
        **{name: result.get(name) for name in task_type.result_fields},
        "load": state.load,
        "job_id": state.job_id,
        "status": state.status,
        "error": state.error,
        "progress": state.progress,
    }
    if result_files.RESULT_FILE in result:
        body[result_files.RESULT_FILE] = result[result_files.RESULT_FILE]
    if state.output is not None:
        body["output"] = state.output
    return body


def fair_order() -> bool:
    """Serve clients in turn (QUEUE_ORDER=fair) rather than first come, first served."""
    return settings.QUEUE_ORDER == "fair"


def describe_error(exc_string: str | None, timeout: int | None) -> str:
    """A failure in one line for clients and logs, from RQ's traceback string."""
    lines = [line for line in (exc_string or "").strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "the job failed"
    if "JobTimeoutException" in last:
        return f"timed out after {timeout} s" if timeout else "timed out"
    if "AbandonedJobError" in (exc_string or ""):
        attempts = settings.JOB_MAX_RETRIES + 1
        return f"abandoned: the worker running it died ({attempts} attempt{'s' if attempts > 1 else ''})"
    # "package.module.ValueError: message" -> "ValueError: message"
    head, sep, message = last.partition(": ")
    return f"{head.rsplit('.', 1)[-1]}{sep}{message}" if sep else last
