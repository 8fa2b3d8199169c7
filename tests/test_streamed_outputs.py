"""Streamed outputs (issue 32): a generator handler's pieces as `output` events of its job's stream,
through real workers and the real server: factors arriving before the job is done, polls showing
the output so far (the lean lane and DRF), Last-Event-ID resuming exactly (past a trimmed stream
too), a stopped job keeping what it streamed, `output` webhooks signed as Standard Webhooks, a
batch handler streaming per item, and the limits."""

from __future__ import annotations

import contextlib
import json
import math

import pytest
from standardwebhooks import Webhook
from sympy import factor_cache, nextprime

from factorize_app import jobs
from factorize_app.tasks import get_task_type
from factorize_app.tasks.factorization.model import factor_steps
from tests.conftest import submit, wait_until
from tests.test_event_stream import open_stream, read_events
from tests.test_webhooks import receiver, webhook_settings, worker_env  # noqa: F401 (fixtures)


def several(offset: int) -> tuple[int, list[list[int]]]:
    """2^3 3 (trial division), then primes of 10, 12 and 14 digits (Pollard rho and ECM, found
    over about half a second): the number, and its factors in the order the model finds them
    (run here first: the order is the model's own, the same in any process). Each test factors
    its own number (a worker's sympy remembers factors)."""
    primes = [nextprime(10**digits + offset * 10 ** (digits - 3)) for digits in (9, 11, 13)]
    number = 2**3 * 3 * math.prod(primes)
    factor_cache.cache_clear()
    steps, found = factor_steps(number, lambda fraction, message: None), []
    with contextlib.suppress(StopIteration):
        while True:
            found.append(next(steps))
    factor_cache.cache_clear()
    assert sorted(found) == [[2, 3], [3, 1], *([prime, 1] for prime in primes)]
    return number, found


def long_job(offset: int) -> tuple[int, list[list[int]]]:
    """2^3 3 and a 10-digit prime (trial division, Pollard rho), then a 41-digit semiprime: for
    offset 0, over ten seconds of ECM (others may be found by a lucky curve at once); the number,
    and the three factors found first."""
    small = nextprime(10**9 + offset * 10**6)
    hard = nextprime(10**19 + offset * 10**16) * nextprime(3 * 10**20 + offset * 10**17)
    return 2**3 * 3 * small * hard, [[2, 3], [3, 1], [small, 1]]


def outputs(events: list[dict]) -> list[dict]:
    return [event for event in events if event.get("event") == "output"]


def test_factors_arrive_as_output_events_before_the_job_is_done(live_url, warm_worker, session, api):
    """Each prime comes as an `output` event while the job still runs (a poll made on its arrival
    says not done, and shows the output so far), before the done event; the result is unchanged."""
    warm_worker("factorization")
    number, found = several(0)
    job_id = session.post(f"{live_url}/factorize", json={"number": str(number)}, timeout=10).json()["job_id"]
    polled_at_first_output = None
    events = []
    for event in read_events(open_stream(live_url, job_id)):
        if "data" not in event:
            continue
        events.append(event)
        if event["event"] == "output" and polled_at_first_output is None:
            polled_at_first_output = session.get(f"{live_url}/jobs/{job_id}", timeout=10).json()  # the lean lane
    assert events[-1]["event"] == "status" and events[-1]["data"]["done"] is True
    streamed = outputs(events)
    before = events[0]["data"].get("output", [])  # the state first sent: the pieces made before it
    assert before + [event["data"]["output"] for event in streamed] == found  # in the order found
    assert [event["data"]["index"] for event in streamed] == list(range(len(before), 5)) and streamed
    assert all(event["data"]["job_id"] == job_id for event in streamed)
    first = events.index(streamed[0])
    assert first < len(events) - 1 and not any(event["data"].get("done") for event in events[: first + 1])
    assert polled_at_first_output["done"] is False and polled_at_first_output["status"] == "started"
    assert polled_at_first_output["output"] == found[: len(polled_at_first_output["output"])]
    assert polled_at_first_output["output"]  # at least the piece just received
    ids = [event["id"] for event in events if "id" in event]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == len(ids)
    done = events[-1]["data"]
    assert done["factorization"] == sorted(found) and done["output"] == found  # the result: whole
    assert done["factorization_str"] == " ".join(f"{p}^{e}" for p, e in sorted(found))
    # Polls after the end still show it: the lean lane's, and DRF's (the same body).
    lean = session.get(f"{live_url}/jobs/{job_id}", timeout=10).json()
    assert lean["output"] == found and lean == {**api.get(f"/jobs/{job_id}").json(), "load": lean["load"]}


def test_last_event_id_resumes_outputs_without_loss_or_repeat(live_url, warm_worker, session, redis_conn):
    """A client resuming after its first output event gets each later piece once, then the end;
    and so it does after the capped stream has dropped those entries (read from the job's output)."""
    warm_worker("factorization")
    number, found = several(4)
    # A stream someone opened before the job ran (as a client watching it would): every change kept.
    expected_id = jobs.job_id_for(get_task_type("factorization"), {"number": number})
    jobs.open_events(job_ids=[expected_id])
    job_id = session.post(f"{live_url}/factorize", json={"number": str(number)}, headers={"Prefer": "wait=60"},
                          timeout=70).json()["job_id"]  # fmt: skip
    assert job_id == expected_id
    # From the start (the lowest id): every event, each piece among them.
    whole = [event for event in read_events(open_stream(live_url, job_id, **{"Last-Event-ID": "0-0"}))]
    assert [event["data"]["output"] for event in outputs(whole)] == found
    assert whole[-1]["data"]["done"] is True and whole[-1]["data"]["output"] == found
    second = outputs(whole)[1]["id"]
    resumed = [event for event in read_events(open_stream(live_url, job_id, **{"Last-Event-ID": second}))]
    assert [event["data"]["output"] for event in outputs(resumed)] == found[2:]
    assert [event["id"] for event in resumed] == [event["id"] for event in whole[whole.index(outputs(whole)[1]) + 1 :]]
    redis_conn.xtrim(f"factorize:events:{job_id}", maxlen=1)  # only the done event is left
    trimmed = [event for event in read_events(open_stream(live_url, job_id, **{"Last-Event-ID": second}))]
    assert [event["data"]["output"] for event in outputs(trimmed)] == found[2:]
    assert [event["id"] for event in outputs(trimmed)] == [event["id"] for event in outputs(whole)[2:]]
    assert trimmed[-1]["data"]["done"] is True and trimmed[-1]["data"]["output"] == found


def test_a_stopped_streaming_job_keeps_what_it_streamed(live_url, warm_worker, session, api):
    warm_worker("factorization")
    number, found = long_job(0)
    job_id = session.post(f"{live_url}/factorize", json={"number": str(number)}, timeout=10).json()["job_id"]
    response = open_stream(live_url, job_id)
    events, deleted = [], False
    for event in read_events(response):
        if "data" not in event:
            continue
        events.append(event)
        data = event["data"]
        held = data["index"] + 1 if event["event"] == "output" else len(data.get("output", []))
        if held == 3 and not deleted:  # the first three factors streamed: ECM has begun
            assert session.delete(f"{live_url}/jobs/{job_id}", timeout=10).status_code == 202
            deleted = True
    assert events[-1]["data"]["status"] == "canceled" and events[-1]["data"]["output"] == found[:3]
    polled = api.get(f"/jobs/{job_id}").json()
    assert polled["status"] == "canceled" and polled["output"] == found[:3]
    assert polled["factorization"] is None


def test_output_webhooks_are_delivered_signed(api, receiver, webhook_settings, warm_worker, start_worker):  # noqa: F811
    warm_worker("factorization")
    start_worker("webhooks", **worker_env(receiver))
    number, found = several(7)
    answer = submit(api, "/factorize", number=str(number), webhook=receiver.url(),
                    webhook_events_filter=["output", "completed"]).json()  # fmt: skip
    secret = answer["webhook_secret"]
    wait_until(lambda: any(body["event"] == "completed" for body in receiver.bodies()), timeout=60, what="completed")
    with receiver.lock:
        requests_made = list(receiver.requests)
    bodies = [Webhook(secret).verify(r["body"], {k.lower(): v for k, v in r["headers"].items()}) for r in requests_made]
    delivered = [body for body in bodies if body["event"] == "output"]
    assert delivered, [body["event"] for body in bodies]
    for body in delivered:  # each carries the pieces up to its own, the new one last
        assert body["done"] is False and body["output"] == found[: len(body["output"])] and body["output"]
        assert body["status"] == "started" and body["factorization"] is None
    (completed,) = [body for body in bodies if body["event"] == "completed"]
    assert completed["output"] == found and completed["factorization"] == sorted(found)
    assert {body["event"] for body in bodies} == {"output", "completed"}  # no start or progress: not asked for
    refused = api.post("/factorize", {"number": 91, "webhook": receiver.url(), "webhook_events_filter": ["outputs"]},
                       format="json")  # fmt: skip
    assert refused.status_code == 400 and "webhook_events_filter" in refused.json()


def test_a_batch_handler_streams_per_item(api, start_worker):
    """`handle_batch` yields (index, piece) pairs: each piece is its own job's; a generator that
    returns nothing has its pieces as its result (its result serializer's one field)."""
    items = [{"tag": "abc"}, {"tag": "de"}, {"tag": "f"}]
    answer = api.post("/speller/batch", {"items": items}, format="json")
    assert answer.status_code == 200, answer.content
    job_ids = [result["job_id"] for result in answer.json()["results"]]
    start_worker("speller")  # takes the three queued jobs at once: one handle_batch call
    done = [wait_until(lambda j=j: (b := api.get(f"/jobs/{j}").json())["done"] and b, what="done") for j in job_ids]
    assert [body["output"] for body in done] == [["a/3", "b/3", "c/3"], ["d/3", "e/3"], ["f/3"]]
    assert [body["letters"] for body in done] == [body["output"] for body in done]
    alone = wait_until(lambda: (b := submit(api, "/speller", tag="gh").json())["done"] and b, what="one job")
    assert alone["output"] == alone["letters"] == ["g/1", "h/1"]  # handle(), alone


def test_the_output_limits_fail_the_job_and_keep_what_came_before(api, warm_worker):
    warm_worker("factorization", OUTPUT_MAX_PIECES="3", OUTPUT_PIECE_MAX_BYTES="12")
    many = submit(api, "/factorize", number=2 * 3 * 5 * 7).json()["job_id"]  # four pieces of 5 bytes
    large = submit(api, "/factorize", number=2 * nextprime(10**9 + 5)).json()["job_id"]  # [100000000x,1]: 14 bytes
    bodies = [
        wait_until(lambda j=j: (b := api.get(f"/jobs/{j}").json())["done"] and b, what="done") for j in (many, large)
    ]
    assert bodies[0]["status"] == "failed" and bodies[0]["output"] == [[2, 1], [3, 1], [5, 1]]
    assert bodies[0]["error"] == "OutputLimitExceeded: output past OUTPUT_MAX_PIECES (3 pieces)"
    assert bodies[1]["status"] == "failed" and bodies[1]["output"] == [[2, 1]]
    assert bodies[1]["error"] == "OutputLimitExceeded: output piece 1: 14 bytes, over OUTPUT_PIECE_MAX_BYTES (12)"


def test_a_job_that_streams_nothing_has_no_output_field(api, warm_worker):
    warm_worker("batched")
    body = wait_until(lambda: (b := submit(api, "/batched", x=4).json())["done"] and b, what="done")
    assert "output" not in body and body["double"] == 8


def test_the_client_prints_streamed_outputs_as_they_arrive(live_url, warm_worker):
    """`factorize --watch` prints each piece once, on stderr, in order; the Python API's events()
    give each piece as the body with it last in `output`."""
    from tests.test_client_package import Client, factorize

    warm_worker("factorization")
    number, found = several(9)
    watched = factorize(live_url, "--watch", str(number))
    assert watched.returncode == 0, watched.stderr
    printed = [line for line in watched.stderr.splitlines() if f"{number} output " in line]
    assert printed == [f"{number} output {n}: {json.dumps(piece)}" for n, piece in enumerate(found)]
    assert watched.stdout.splitlines() == [f"{number} = " + " ".join(f"{p}^{e}" for p, e in sorted(found))]
    number, found = several(11)
    bodies = list(Client(live_url).submit("factorization", {"number": number}).events())
    assert bodies[-1]["done"] and bodies[-1]["output"] == found
    assert all(body["output"] == found[: len(body["output"])] for body in bodies if "output" in body)


def test_the_result_rule_of_a_generator_handler():
    """Its return value when it returns one; else its pieces as the result serializer's one field,
    validated; a result of other fields needs a return value; a batch yields (index, piece)."""
    from factorize_app.tasks import get_task_type
    from factorize_app.tasks.streaming import StreamedResultError, drain, drain_batch, run_to_end

    def pieces(*values, returned=None):
        yield from values
        return returned

    speller, factorization = get_task_type("speller"), get_task_type("factorization")
    seen = []
    assert drain(speller, pieces("a", "b"), seen.append) == {"letters": ["a", "b"]} and seen == ["a", "b"]
    assert drain(speller, pieces("a", returned={"letters": ["z"]}), None) == {"letters": ["z"]}
    with pytest.raises(StreamedResultError, match="one field"):
        drain(factorization, pieces([2, 1]), None)  # two result fields, and no return value
    with pytest.raises(StreamedResultError, match="letters"):
        drain(speller, pieces({"not": "a letter"}), None)
    emitted = []
    answer = drain_batch(speller, pieces((1, "b"), (0, "a")), 2, lambda index, piece: emitted.append((index, piece)))
    assert answer == [{"letters": ["a"]}, {"letters": ["b"]}] and emitted == [(1, "b"), (0, "a")]
    with pytest.raises(TypeError, match=r"\(index, piece\)"):
        drain_batch(speller, pieces("a"), 2, None)
    assert run_to_end(pieces(1, 2, returned={"done": True})) == {"done": True} and run_to_end({"plain": 1}) == {
        "plain": 1
    }

