"""Job ids and inputs: one id per (task type, validated input), and the input read back.

The id is the type's name and a keyed digest (HMAC-SHA256) of the canonical JSON of the input:
the same input gives the same id within a deployment, the basis of dedup and of polling by
resubmitting, but no one without the server's key can compute the id of a guessed input (and so
learn whether someone submitted it, or read its result). The key is JOB_ID_KEY, else one derived
from SECRET_KEY. A job's input is kept in its RQ description ("<type> <canonical JSON>"), and is
only believed when it digests to the id.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from typing import Any

from django.conf import settings

from factorize_app.jobs.errors import JobNotFound
from factorize_app.tasks import TaskType, UnknownTaskType, get_task_type

_JOB_ID = re.compile(r"^(?P<task>[A-Za-z0-9_]+)-(?P<digest>[0-9a-f]{32})$")


def canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def job_id_for(task_type: TaskType, data: dict[str, Any]) -> str:
    """Same type and same validated input, same id: the basis of dedup and polling."""
    digest = hmac.new(_id_key(settings.JOB_ID_KEY, settings.SECRET_KEY), canonical(data).encode(), hashlib.sha256)
    return f"{task_type.name}-{digest.hexdigest()[:32]}"


@functools.lru_cache(maxsize=4)
def _id_key(job_id_key: str, secret_key: str) -> bytes:
    """JOB_ID_KEY, or a key of its own derived from SECRET_KEY (never SECRET_KEY itself, which
    signs sessions: a digest made with it must not be reusable elsewhere)."""
    if job_id_key:
        return job_id_key.encode()
    return hashlib.sha256(b"factorize_app.jobs.ids:" + secret_key.encode()).digest()


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
