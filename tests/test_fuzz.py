"""Fuzzing: schemathesis against the OpenAPI schema the service serves, on the production server
with a worker. Every operation gets valid and invalid inputs (derandomized, a bounded number of
examples each), and the job endpoints also get the ids of real jobs in every state; no answer may
be a 5xx, and every answer must be documented: its status code, content type, headers and body.

FUZZ_MAX_EXAMPLES (default 50) sets the examples per operation and generation mode.
"""

from __future__ import annotations

import contextlib
import os
import time

import pytest
import requests
import schemathesis
from django.conf import settings
from django.utils.module_loading import import_string
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from factorize_app.tasks import task_types
from tests.conftest import poll_until_done, web_server

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "50"))
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Invalid input must be refused with a 4xx, never accepted (nor enqueued): checked for the shipped
# task types and the job endpoints. The test-only types take `tag` through DRF's CharField, which
# coerces JSON numbers to strings ({"tag": 12} is accepted as "12") although the schema says string.
SHIPPED_PATHS = {f"/{import_string(path).path}" for path in settings.DEFAULT_TASK_TYPES}
# Jobs in every state, for the job endpoints: (path, input, expected status).
KNOWN_JOBS = [
    ("/factorize", {"number": 408216}, "finished"),
    ("/primes", {"n": 100}, "finished"),
    ("/slow-setup", {"tag": "fuzz"}, "finished"),
    ("/batched", {"x": 4}, "finished"),
    ("/batched", {"x": 13}, "failed"),
    ("/failing", {"tag": "fuzz"}, "failed"),
    ("/sleepy", {"seconds": 1}, "queued"),  # no worker listens to it
]
UNWORKED = {"sleepy", "crashing"}  # crashing jobs kill their worker


def checks_for(operation, mode: GenerationMode) -> list:
    lenient = operation.path not in SHIPPED_PATHS and not operation.path.startswith("/jobs/")
    if mode is GenerationMode.POSITIVE or lenient:
        return CONFORMANCE
    return [*CONFORMANCE, negative_data_rejection]


@pytest.fixture
def fuzz_server(start_worker):
    """The production server and one worker. Long polls are capped at 2 s and jobs at 5 s, so that
    a generated `Prefer: wait=N` or a hard 100-digit number cannot hold the run; no throttling, so
    that every case reaches the endpoint's own logic."""
    start_worker(*[task_type.name for task_type in task_types() if task_type.name not in UNWORKED])
    with web_server(MAX_WAIT="2", JOB_TIMEOUT="5", THROTTLE_SUBMIT="", THROTTLE_POLL="") as url:
        yield url


def fuzz_operation(operation, mode: GenerationMode, url: str, session: requests.Session, **fixed) -> int:
    """Run one operation's examples in one generation mode; return how many cases were sent."""
    sent = 0
    checks = checks_for(operation, mode)

    @hypothesis_settings(
        max_examples=MAX_EXAMPLES if not fixed else max(5, MAX_EXAMPLES // 5),
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def run(case) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(base_url=url, session=session, checks=checks, timeout=30)

    with contextlib.suppress(Unsatisfiable):  # nothing invalid to generate (no parameters, no body)
        run()
    return sent


def known_job_ids(url: str) -> list[str]:
    ids = []
    for path, body, expected in KNOWN_JOBS:
        if expected == "queued":
            answer = requests.post(f"{url}{path}", json=body, timeout=10).json()
        else:
            answer = poll_until_done(lambda path=path, body=body: requests.post(f"{url}{path}", json=body, timeout=10))
        assert answer["status"] == expected, answer
        ids.append(answer["job_id"])
    return ids


def shorten(report: str, limit: int = 3000) -> str:
    """A failure report without its (possibly megabyte-long) reproduction command."""
    report = "\n".join(line[:500] for line in report.splitlines())
    return report if len(report) <= limit else report[:limit] + " ..."


def test_every_operation_answers_as_documented(fuzz_server, capsys):
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(f"{fuzz_server}/api/schema/?format=json", timeout=30)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 2 * len(task_types()) + 3  # info and submit per type, job status and cancel, queues
    runs = [(operation, mode, {}) for operation in operations for mode in GenerationMode]
    # Real ids: GET answers each state's documented body; DELETE a 409 (the queued one is last: cancelled).
    job_operations = [operation for operation in operations if operation.path == "/jobs/{id}"]
    for job_id in known_job_ids(fuzz_server):
        for operation in sorted(job_operations, key=lambda op: op.method == "delete"):
            runs.append((operation, GenerationMode.POSITIVE, {"path_parameters": {"id": job_id}}))
    failures: list[str] = []
    counts: dict[str, int] = {}
    with requests.Session() as session:
        for operation, mode, fixed in runs:
            key = f"{operation.label} {mode.value}" + (" (real id)" if fixed else "")
            try:
                counts[key] = counts.get(key, 0) + fuzz_operation(operation, mode, fuzz_server, session, **fixed)
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup; all are reported
                failures.append(f"--- {key} {fixed} ---\n{shorten(str(exc))}")
    total = sum(counts.values())
    with capsys.disabled():
        print(
            f"\nfuzz: {total} cases run over {len(operations)} operations (max {MAX_EXAMPLES} per operation and "
            f"mode, derandomized), {len(failures)} failing, in {time.monotonic() - started:.1f} s"
        )
        print("  " + ", ".join(f"{key}: {count}" for key, count in counts.items()))
    assert not failures, "\n\n".join(failures)
    assert all(count > 0 for key, count in counts.items() if "positive" in key), counts
