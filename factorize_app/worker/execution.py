"""Running one taken batch: its handler calls, under the lease keeper, through the batch's states.

A type with a batch handler gets one call for every job (one model call for K inputs); if that
call fails, its jobs run one by one so that a bad input fails alone. A job's failure is its
own: it is recorded for its client and the worker carries on.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import TYPE_CHECKING

from rq.timeouts import JobTimeoutException

from factorize_app import jobs
from factorize_app.jobs.file_inputs import local_inputs
from factorize_app.tasks import TaskType, get_task_type
from factorize_app.worker.batch import Batch
from factorize_app.worker.interruption import YIELDED, JobStopped
from factorize_app.worker.progress import ProgressReports

if TYPE_CHECKING:
    from factorize_app.worker.loop import WarmWorker

logger = logging.getLogger("factorize_app.worker")


def run_batch(worker: WarmWorker, taken: list[jobs.TakenJob]) -> int:
    """Run and record the batch; answers how many jobs ended (not counting those handed back)."""
    task_type = get_task_type(taken[0].task_name)
    batch, progress = Batch(worker.name, taken), ProgressReports()
    with worker.keeper.keeping(batch, progress):
        if task_type.batch_handler is not None and len(taken) > 1:
            running = batch.start_together()
            ended = {job.job_id: outcome for job in running if (outcome := ended_before_start(job))}
            batch.record(list(ended.values()))
            running = [job for job in running if job.job_id not in ended]
            together = _run_together(worker, task_type, running, progress) if running else []
            if together:
                batch.record([progress.outputs.with_output(o) for o in batch.stopped_meanwhile(together)])
            else:
                progress.outputs.discard(running)  # they stream anew
                batch.unstart(running)  # the handler failed: run them one by one
        while (job := batch.next_job()) is not None:
            if worker._stop_requested:
                batch.unstart([job])  # a warm stop: the running job has finished; hand the rest back
                break
            batch.record([ended_before_start(job) or _run_one(worker, task_type, job, progress)])
        # Still under the lease keeper: jobs whose results wait for Redis stay leased to us.
        batch.finish()
    ended = [outcome for outcome in batch.outcomes if outcome.status != jobs.QUEUED]
    worker.costs.learn(task_type.name, ended)
    _log_batch(task_type, ended, batch.handed_back + len(batch.outcomes) - len(ended))
    return len(ended)


def ended_before_start(job: jobs.TakenJob) -> jobs.JobOutcome | None:
    """A taken job that must not run: stopped before it was taken (its worker died after the
    request), or past its Cancel-After deadline while it waited."""
    if job.stop:
        return jobs.JobOutcome(job, jobs.CANCELED, 0.0, exc_string=job.stop)
    if job.deadline is not None and time.time() > job.deadline:
        return jobs.JobOutcome(job, jobs.ABORTED, 0.0, exc_string=jobs.ABORTED_ERROR)
    return None


def _run_one(worker: WarmWorker, task_type: TaskType, job: jobs.TakenJob, reports: ProgressReports) -> jobs.JobOutcome:
    """The job's handler call; its outcome carries the pieces it streamed not yet written."""
    return reports.outputs.with_output(_call_one(worker, task_type, job, reports))


def _call_one(worker: WarmWorker, task_type: TaskType, job: jobs.TakenJob, reports: ProgressReports) -> jobs.JobOutcome:
    progress, output = reports.reporter([job]), reports.outputs.emitter(job)
    started = time.monotonic()
    try:
        if job.input is None:
            raise ValueError(f"job {job.job_id} has no input this service can read")
        penalty = worker.death_penalty_class(job.timeout, JobTimeoutException, job_id=job.job_id)
        with penalty, worker.handler_call(job.job_id), local_inputs(task_type, [job.input]) as (data,):
            result = task_type.handler(data, progress=progress, output=output)
    except JobStopped as stopped:
        if stopped.reason == YIELDED:  # queued again, for later: not a failure, not a retry
            return jobs.JobOutcome(job, jobs.QUEUED, time.monotonic() - started)
        return jobs.JobOutcome(job, jobs.CANCELED, time.monotonic() - started, exc_string=stopped.reason)
    except JobTimeoutException:
        return jobs.JobOutcome(job, jobs.FAILED, time.monotonic() - started, exc_string="JobTimeoutException")
    except Exception:  # the job's failure, recorded for its client; the worker carries on
        return jobs.JobOutcome(job, jobs.FAILED, time.monotonic() - started, exc_string=traceback.format_exc())
    return finished(worker, task_type, job, result, time.monotonic() - started)


def finished(
    worker: WarmWorker, task_type: TaskType, job: jobs.TakenJob, result: object, seconds: float
) -> jobs.JobOutcome:
    """A job's outcome once its handler returned: its files and a large result stored outside
    Redis first (jobs.store_outputs). A storage that keeps failing hands the job back to its
    queue, to run again later (nothing lost); a result the service cannot keep fails the job."""
    try:
        give_up = lambda: worker._stop_requested  # noqa: E731 (a warm stop hands the job back at once)
        result = jobs.store_outputs(
            task_type=task_type, job_id=job.job_id, result=result, ttl=job.result_ttl, give_up=give_up
        )
    except jobs.OutputsNotStored as exc:
        extra = {"job_id": job.job_id, "error": str(exc)}
        logger.warning("job handed back: its outputs could not be stored", extra=extra)
        return jobs.JobOutcome(job, jobs.QUEUED, seconds)
    except jobs.OutputRefused as exc:
        return jobs.JobOutcome(job, jobs.FAILED, seconds, exc_string=f"{type(exc).__name__}: {exc}")
    except Exception:  # a bug in storing it: the job's failure, never the worker's end
        return jobs.JobOutcome(job, jobs.FAILED, seconds, exc_string=traceback.format_exc())
    return jobs.JobOutcome(job, jobs.FINISHED, seconds, result=result)


def _run_together(
    worker: WarmWorker, task_type: TaskType, taken: list[jobs.TakenJob], reports: ProgressReports
) -> list[jobs.JobOutcome]:
    """One call of the type's batch handler for every job (one model call for K inputs).

    If it raises or times out, nothing is recorded and the jobs run one by one, so a bad
    input fails alone. Its time limit is the sum of the jobs' own.
    """
    if any(job.input is None for job in taken):
        return []
    progress, output = reports.reporter(taken), reports.outputs.batch_emitter(taken)
    started = time.monotonic()
    try:
        time_limit = sum(job.timeout for job in taken)
        penalty = worker.death_penalty_class(time_limit, JobTimeoutException, job_id=taken[0].job_id)
        with penalty, local_inputs(task_type, [job.input for job in taken]) as inputs:
            results = task_type.batch_handler(inputs, progress=progress, output=output)
        if len(results) != len(taken):
            raise ValueError(f"batch handler returned {len(results)} results for {len(taken)} inputs")
    except Exception:
        worker.log.warning("batch handler of %s failed; running the jobs one by one", task_type.name, exc_info=True)
        return []
    each = (time.monotonic() - started) / len(taken)
    pairs = zip(taken, results, strict=True)
    return [finished(worker, task_type, job, result, each) for job, result in pairs]


def _log_batch(task_type: TaskType, outcomes: list[jobs.JobOutcome], handed_back: int) -> None:
    """One line per batch; one more per failed job (per finished job only at DEBUG level)."""
    for outcome in outcomes:
        if outcome.status == jobs.FAILED:
            error = jobs.describe_error(outcome.exc_string, outcome.job.timeout)
            logger.warning("job failed", extra=_event(outcome, error=error))
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug("job finished", extra=_event(outcome))
    logger.info(
        "batch done",
        extra={
            "task_type": task_type.name,
            "jobs": len(outcomes),
            "failed": sum(outcome.status == jobs.FAILED for outcome in outcomes),
            "handed_back": handed_back,
            "duration_s": round(sum(outcome.seconds for outcome in outcomes), 6),
        },
    )


def _event(outcome: jobs.JobOutcome, **extra) -> dict:
    return {
        "job_id": outcome.job.job_id,
        "task_type": outcome.job.task_name,
        "status": outcome.status,
        "duration_s": round(outcome.seconds, 6),
        **extra,
    }
