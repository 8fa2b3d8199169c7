"""The webhook events a subscriber may ask for, and which of a job's events make one.

`start` (the job was taken by a worker), `progress` (it reported progress), `output` (a
streaming job yielded a piece: the body's `output` holds every piece so far, the new one last)
and `completed` (any end: finished, failed, canceled, aborted; its body holds the whole output).
`progress` and `output` deliveries are throttled as Cog throttles its webhooks: at most one per
PROGRESS_INTERVAL_MS of the two together, none while the previous one is pending (a slow receiver
gets the latest, and an `output` delivery carries every piece before it). A job queued again
makes none. A delivery carries the job's status body as of the event (what `GET /jobs/<id>`
answered then), plus the event's name.
"""

from __future__ import annotations

from typing import Any

from factorize_app import jobs
from factorize_app.tasks import TaskType

START, PROGRESS, OUTPUT, COMPLETED = "start", "progress", "output", "completed"
EVENTS = (START, PROGRESS, OUTPUT, COMPLETED)
THROTTLED = (PROGRESS, OUTPUT)  # deliveries at most one per PROGRESS_INTERVAL_MS, none while one is pending
DEFAULT_EVENTS = [COMPLETED]
# Progress deliveries of one subscription are at least this far apart (by the events' times), and
# none is made while its previous one is still pending: a slow receiver gets the latest, not a pile.
PROGRESS_INTERVAL_MS = 500


def event_name(event: jobs.JobEvent) -> str | None:
    """The webhook event a job's event makes; None for none (queued again)."""
    if event.status in jobs.DONE_STATUSES:
        return COMPLETED
    if event.status == jobs.STARTED:
        if event.output:
            return OUTPUT
        return PROGRESS if event.progress else START
    return None


def delivered_body(task_type: TaskType, state: jobs.JobState, name: str) -> dict[str, Any]:
    """What a delivery of event `name` carries: the job's status body as of the event, and `event`."""
    return {**jobs.status_body(task_type, state), "event": name}
