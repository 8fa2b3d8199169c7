"""Large request bodies under a budget per web process (factorize_app/api/bodies.py): forty
concurrent 1 MB batches against the real server leave its memory bounded, the ones past the budget
answered 503 JSON naming BODY_MEMORY_BUDGET, with Retry-After, before their bodies are read;
small requests never wait on it."""

from __future__ import annotations

import concurrent.futures
import json
import threading

import pytest
import requests

from factorize_app.api import bodies
from factorize_app.api.bodies import BodyBudget
from tests.conftest import server_pid, web_server
from tests.test_hostile_input import resident_kib

MIB = 1024 * 1024
BATCHES = 40


def megabyte_batch(index: int) -> bytes:
    """1,000 items, about 1 MB: half valid inputs, half hostile ones (each answered with its own error)."""
    items = [
        {"number": 10**12 + index * 1000 + item} if item % 2 else {"number": str(index) + "9" * 1900}
        for item in range(1000)
    ]
    body = json.dumps({"items": items}).encode()
    assert 0.9 * MIB < len(body) < MIB, len(body)
    return body


def send_together(url: str, bodies: list[bytes]) -> list[requests.Response]:
    """Every body at once: each thread waits for the others before sending."""
    ready = threading.Barrier(len(bodies))

    def post(body: bytes) -> requests.Response:
        ready.wait()
        return requests.post(
            f"{url}/factorize/batch", data=body, headers={"Content-Type": "application/json"}, timeout=120
        )

    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def burst(url: str, pid: int, rounds: int = 3) -> tuple[float, list[int], list[requests.Response]]:
    """MiB the server's process tree grew by over `rounds` bursts of BATCHES concurrent 1 MB batches
    (after one warm batch), the statuses, and the last burst's refusals."""
    bodies = [megabyte_batch(index) for index in range(BATCHES)]
    assert requests.post(
        f"{url}/factorize/batch", data=bodies[0], headers={"Content-Type": "application/json"}, timeout=120
    ).status_code == 200  # fmt: skip
    small = [json.dumps({"items": [{"number": 10**9 + index}]}).encode() for index in range(BATCHES)]
    assert {answer.status_code for answer in send_together(url, small)} == {200}  # the threads a burst wakes
    before = resident_kib(pid)
    statuses, refused = [], []
    for _ in range(rounds):
        answers = send_together(url, bodies)
        statuses += [answer.status_code for answer in answers]
        refused = [answer for answer in answers if answer.status_code == 503]
    return (resident_kib(pid) - before) / 1024, statuses, refused


# The bursts queue 60,000 jobs from one client: its queued cap is lifted, the bodies are the subject.
def test_concurrent_large_batches_leave_the_web_process_bounded():
    """Without the budget, bursts of 40 concurrent 1 MB batches grew the server by over 300 MiB,
    and it kept them. The bound with the default budget (4 MiB of large bodies at once per process):
    4 such batches at once. A 1 MB batch of 1,000 items costs the process 12-15 MiB while it is
    parsed, validated and answered (measured: one at a time, then four), so the bound is 20 times
    the budget, 80 MiB, however many arrive (the server threads that 40 concurrent requests wake
    are woken, and measured, before). Most of a burst's batches are refused 503 unread."""
    with web_server(THROTTLE_SUBMIT="", MAX_QUEUED_PER_CLIENT="0", BODY_MEMORY_BUDGET="0") as url:
        unbounded, statuses, _ = burst(url, server_pid(url))
    assert set(statuses) == {200}
    with web_server(THROTTLE_SUBMIT="", MAX_QUEUED_PER_CLIENT="0") as url:
        bounded, statuses, refused = burst(url, server_pid(url))
    print(
        f"\nbodies: {BATCHES} concurrent 1 MB batches x 3: without the budget the server grew "
        f"{unbounded:.0f} MiB; with it {bounded:.0f} MiB ({statuses.count(200)} served, "
        f"{statuses.count(503)} refused 503)"
    )
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 3, statuses
    assert refused, "40 at once are past a 4 MiB budget"
    for answer in refused:
        assert answer.headers["Retry-After"] == "1"
        assert answer.json()["reason"] == "BODY_MEMORY_BUDGET" and "BODY_MEMORY_BUDGET" in answer.json()["detail"]
    assert bounded < 20 * 4, f"the web server grew {bounded:.0f} MiB"
    assert unbounded > 3 * bounded, "the budget is what bounds it"


@pytest.mark.django_db
def test_while_the_budget_is_held_large_bodies_are_refused_unread_and_small_ones_served(
    api, redis_conn, settings, monkeypatch
):
    held = BodyBudget()
    monkeypatch.setattr(bodies, "BODIES", held)
    share = held.take(settings.BODY_MEMORY_BUDGET, settings.BODY_MEMORY_BUDGET)  # another request's
    large = {"items": [{"number": 10**9 + index, "tag": "x" * 100} for index in range(600)]}
    refused = api.post("/factorize/batch", large, format="json")
    assert refused.status_code == 503 and refused["Retry-After"] == "1"
    assert refused.json()["reason"] == "BODY_MEMORY_BUDGET"
    assert api.post("/factorize", {"number": 12}, format="json").status_code == 202, "a small body never asks"
    small_batch = {"items": [{"number": 13}, {"number": 14}]}
    assert api.post("/factorize/batch", small_batch, format="json").status_code == 200
    assert held.give_back(share)
    assert api.post("/factorize/batch", large, format="json").status_code == 200, "room again"
    assert held.held == 0, "given back after its answer"


def test_the_budget_takes_and_gives_back():
    budget = BodyBudget()
    first = budget.take(3 * MIB, 8 * MIB)
    second = budget.take(5 * MIB, 8 * MIB)
    assert (first, second) == (3 * MIB, 5 * MIB)
    assert budget.take(1, 8 * MIB) is None, "full"
    assert not budget.give_back(first), "one still held"
    assert budget.take(20 * MIB, 8 * MIB) is None, "larger than the budget: only alone"
    assert budget.give_back(second), "the end of the burst"
    assert budget.take(20 * MIB, 8 * MIB) == 8 * MIB, "alone, it takes the whole budget"
