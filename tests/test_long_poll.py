"""`Prefer: wait=N`: a poll that holds until the job is done, or N seconds, capped by MAX_WAIT."""

import threading

from tests.test_job_lifecycle import submit


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
