"""What a type's jobs cost here, and so how many to take at once.

A batch aims at WORKER_BATCH_SECONDS of work: a type whose jobs take 1 ms is taken by the hundred,
one whose jobs take a second one at a time. The same estimates tell fair order what to charge a
client per job taken (jobs.take_jobs).
"""

from __future__ import annotations

import collections
import statistics

from django.conf import settings

from factorize_app import jobs
from factorize_app.tasks import TaskType

# Jobs of a type that has not run here yet: take a few, not a full batch, until its cost is known.
FIRST_BATCH = 10


class CostEstimates:
    """Seconds per job of each type: the median of its last jobs here, so one unusually fast (or
    slow) job does not swing the next batch's size; None for a type that has not run yet."""

    WINDOW = 32

    def __init__(self) -> None:
        self._recent: dict[str, collections.deque[float]] = {}

    def learn(self, task_name: str, outcomes: list[jobs.JobOutcome]) -> None:
        recent = self._recent.setdefault(task_name, collections.deque(maxlen=self.WINDOW))
        recent.extend(outcome.seconds for outcome in outcomes)

    def seconds_per_job(self, task_name: str) -> float | None:
        recent = self._recent.get(task_name)
        return statistics.median(recent) if recent else None

    def per_type(self, task_names: list[str]) -> dict[str, float]:
        """Seconds per job of each of these types that has run here (what fair order charges)."""
        return {name: per_job for name in task_names if (per_job := self.seconds_per_job(name))}

    def batch_size(self, task_type: TaskType) -> int:
        """Aim a batch at WORKER_BATCH_SECONDS of this type's work, judged by its recent jobs."""
        limit = task_type.max_batch_size or settings.WORKER_BATCH_SIZE  # a model knows its own best batch
        per_job = self.seconds_per_job(task_type.name)
        if per_job is None:
            return min(limit, FIRST_BATCH)
        return max(1, min(limit, int(settings.WORKER_BATCH_SECONDS / max(per_job, 1e-6))))
