"""`Prefer: wait=N`: a poll that holds until the job is done, or N seconds, capped by MAX_WAIT."""

import signal
import threading

from tests.conftest import submit, wait_done, wait_until, web_server


def test_wait_returns_the_result_as_soon_as_the_job_finishes(api, start_worker):
    start_worker("sleepy")
    response = api.post("/sleepy", {"seconds": 1, "tag": "w"}, format="json", HTTP_PREFER="wait=20")
    assert response.status_code == 200
    assert response.json()["status"] == "finished"
    assert response["Preference-Applied"] == "wait=20"


def test_every_concurrent_waiter_wakes(api, start_worker):
    job_id = submit(api, "/sleepy", seconds=1, tag="many").json()["job_id"]
    answers = []

    def wait_by_get():
        from rest_framework.test import APIClient

        answers.append(APIClient().get(f"/jobs/{job_id}", HTTP_PREFER="wait=30").json()["status"])

    waiters = [threading.Thread(target=wait_by_get) for _ in range(5)]
    for waiter in waiters:
        waiter.start()
    start_worker("sleepy")
    for waiter in waiters:
        waiter.join(60)
    assert answers == ["finished"] * 5


def test_wait_times_out_cleanly_with_the_pending_answer(api):
    response = api.post("/factorize", {"number": 77}, format="json", HTTP_PREFER="wait=1")
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert response["Preference-Applied"] == "wait=1"
    assert response["Location"].startswith("/jobs/")


def test_wait_is_capped_by_max_wait(api, settings):
    settings.MAX_WAIT = 1
    response = api.post("/factorize", {"number": 78}, format="json", HTTP_PREFER="respond-async, wait=3600")
    assert response.status_code == 202
    assert response["Preference-Applied"] == "wait=1"


def test_get_job_honours_wait_too(api, start_worker):
    job_id = submit(api, "/sleepy", seconds=1, tag="get").json()["job_id"]
    start_worker("sleepy")
    response = api.get(f"/jobs/{job_id}", HTTP_PREFER="wait=20")
    assert response.status_code == 200
    assert response.json()["slept"] == 1


def test_a_malformed_or_absent_preference_is_ignored(api):
    for header in ("wait=soon", "wait=-1", "handling=lenient"):
        response = api.post("/factorize", {"number": 79}, format="json", HTTP_PREFER=header)
        assert response.status_code == 202
        assert "Preference-Applied" not in response


def test_hundreds_of_waiters_do_not_starve_other_requests(redis_conn):
    """200 clients hold `Prefer: wait` polls on the production server; a plain poll still gets through
    while every one of them is still waiting. (All come from 127.0.0.1, one client: its cap on held
    requests is lifted here; tests/test_client_isolation.py tests the cap.)"""
    with web_server(MAX_HELD_PER_CLIENT="1000") as live_url:
        _hundreds_of_waiters(live_url)


def _hundreds_of_waiters(live_url: str) -> None:
    import requests

    job_id = requests.post(f"{live_url}/factorize", json={"number": 991}, timeout=10).json()["job_id"]
    returned = []
    started = threading.Barrier(201)

    def wait_for_job():
        started.wait()
        response = requests.get(f"{live_url}/jobs/{job_id}", headers={"Prefer": "wait=8"}, timeout=30)
        returned.append(response.status_code)

    waiters = [threading.Thread(target=wait_for_job) for _ in range(200)]
    for waiter in waiters:
        waiter.start()
    started.wait()
    other = requests.post(f"{live_url}/primes", json={"n": 97}, timeout=10)
    assert other.status_code == 202
    assert returned == [], "a waiter returned before its wait ran out: the plain poll was not tested under load"
    for waiter in waiters:
        waiter.join(60)
    assert returned == [202] * 200


def test_a_hard_number_shows_its_progress_while_it_runs(api, start_worker):
    """The factorization handler reports its stages; a poll shows the latest, throttled by the
    worker; primes reports nothing and shows null."""
    from sympy import nextprime

    hard = nextprime(10**19) * nextprime(3 * 10**20)  # a 41-digit semiprime: seconds of ECM
    worker = start_worker("factorization", "primes")
    submit(api, number=hard)
    seen = wait_until(
        lambda: (api.post("/factorize", {"number": hard}, format="json").json().get("progress") or {}).get("fraction")
        is not None
        and api.post("/factorize", {"number": hard}, format="json").json(),
        timeout=60,
        what="ECM progress",
    )
    assert seen["status"] == "started" and seen["progress"]["message"].startswith("ECM, curve ")
    assert 0 <= seen["progress"]["fraction"] < 1
    assert wait_done(api, "/primes", n=100)["progress"] is None
    worker.stop(signal.SIGKILL)
