"""The batch's named states (factorize_app.worker.batch), stepped through in-process: the steps
here write nothing to Redis. The worker tests run the same steps in real workers."""

import pytest

from factorize_app import jobs
from factorize_app.worker.batch import TRANSITIONS, Batch, InBatch, InvalidTransition


def taken(*job_ids: str) -> list[jobs.TakenJob]:
    return [
        jobs.TakenJob(job_id, "primes", {"n": 7}, timeout=60, result_ttl=60, failure_ttl=60, execution=f"{job_id}:x")
        for job_id in job_ids
    ]


def states(batch: Batch) -> dict[str, InBatch]:
    return {entry.job.job_id: entry.state for entry in batch._entries}


def test_every_state_has_its_transitions_and_only_the_recorded_and_handed_back_end():
    assert set(TRANSITIONS) == set(InBatch)
    assert {state for state, onward in TRANSITIONS.items() if not onward} == {InBatch.RECORDED, InBatch.HANDED_BACK}


def test_a_move_the_table_does_not_allow_raises():
    batch = Batch("w", taken("a"))
    with pytest.raises(InvalidTransition, match="waiting -> recorded"), batch._lock:
        batch._move(batch._entries, InBatch.RECORDED)
    assert states(batch) == {"a": InBatch.WAITING}


def test_jobs_start_alone_in_taken_order_and_a_stop_of_the_running_one_asks_for_an_interrupt():
    batch = Batch("w", taken("a", "b"))
    first = batch.next_job()
    assert first.job_id == "a" and states(batch) == {"a": InBatch.RUNNING, "b": InBatch.WAITING}
    assert batch.running_alone()[0] == first
    assert batch.stop("a", "asked") is True  # alone in its call: interrupt it
    assert batch.stops_pending() == {"a": "asked"}
    assert [job.job_id for job in batch.leased()] == ["a", "b"]


def test_a_stop_of_a_waiting_job_ends_it_canceled_at_once():
    batch = Batch("w", taken("a", "b"))
    batch.next_job()
    assert batch.stop("b", "asked") is False
    assert states(batch)["b"] is InBatch.ENDED
    assert [(o.job.job_id, o.status, o.exc_string) for o in batch.outcomes] == [("b", jobs.CANCELED, "asked")]
    assert batch.next_job() is None  # nothing waits any more


def test_a_stop_in_a_batch_call_applies_when_the_call_returns_and_is_kept_if_the_job_waits_again():
    batch = Batch("w", taken("a", "b"))
    running = batch.start_together()
    assert set(states(batch).values()) == {InBatch.IN_BATCH_CALL}
    assert batch.running_alone() == (None, 0.0)  # never interrupted inside a batch handler
    assert batch.stop("a", "asked") is False
    finished = [jobs.JobOutcome(job, jobs.FINISHED, 0.1, result=1) for job in running]
    assert [o.status for o in batch.stopped_meanwhile(finished)] == [jobs.CANCELED, jobs.FINISHED]
    batch.unstart(running)  # the batch call failed: one by one
    assert set(states(batch).values()) == {InBatch.WAITING}
    assert batch.next_job().job_id == "a"
    assert batch.stops_pending() == {"a": "asked"}  # interrupted once it runs alone


def test_a_deadline_passed_counts_until_the_job_is_asked_to_stop():
    batch = Batch("w", taken("a"))
    batch.next_job()
    batch.set_deadline("a", 1.0)  # long past
    assert batch.deadline_passed()
    batch.stop("a", jobs.DEADLINE_CANCELED_ERROR)
    assert not batch.deadline_passed()
