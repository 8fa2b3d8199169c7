"""Job ids and inputs: one id per (task type, validated input), and the input read back.

The id is the type's name and a digest of the canonical JSON of the input: the same input
gives the same id, the basis of dedup and of polling by resubmitting. A job's input is kept in
its RQ description ("<type> <canonical JSON>"), and is only believed when it digests to the id.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from factorize_app.jobs.errors import JobNotFound
from factorize_app.tasks import TaskType, UnknownTaskType, get_task_type

_JOB_ID = re.compile(r"^(?P<task>[A-Za-z0-9_]+)-(?P<digest>[0-9a-f]{32})$")


def canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def job_id_for(task_type: TaskType, data: dict[str, Any]) -> str:
    """Same type and same validated input, same id: the basis of dedup and polling."""
    return f"{task_type.name}-{hashlib.sha256(canonical(data).encode()).hexdigest()[:32]}"


def description_for(task_type: TaskType, data: dict[str, Any]) -> str:
    """The job's RQ description: its input, for polls and the dashboard."""
    return f"{task_type.name} {canonical(data)}"


def input_of(task_type: TaskType, job_id: str, description: str) -> dict[str, Any] | None:
    """The validated input a job was submitted with, if the job is really this type's job."""
    name, _, text = description.partition(" ")
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if name != task_type.name or not isinstance(data, dict) or job_id_for(task_type, data) != job_id:
        return None
    return data


def queued_input(data: dict[str, Any], client: str) -> str:
    """What re-enqueues a job lost in an outage: its client (no spaces) and its input."""
    return f"{client.replace(' ', '_')} {canonical(data)}"


def task_type_of(job_id: str) -> TaskType:
    match = _JOB_ID.match(job_id)
    if match is None:
        raise JobNotFound(job_id)
    try:
        return get_task_type(match["task"])
    except UnknownTaskType:
        raise JobNotFound(job_id) from None
