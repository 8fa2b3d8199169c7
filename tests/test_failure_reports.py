"""Failures kept for the people who fix them: a failed job's traceback for staff and its owner
(never for anonymous clients), and a model's failed setup in /queues and /readyz until a
worker of that type sets up again."""

import datetime
import json
import subprocess

import pytest
import requests
from rest_framework.test import APIClient

from factorize_app import jobs
from factorize_app.jobs import keys
from tests.conftest import PYTHON, ROOT, poll_until_done, service_env, wait_done, wait_until


def create_key(name: str) -> str:
    """A key in the service subprocesses' database (as `manage.py create_api_key` prints it)."""
    result = subprocess.run(
        [PYTHON, "manage.py", "create_api_key", name], cwd=ROOT, env=service_env(), capture_output=True, text=True
    )
    return result.stdout.strip()


def test_a_failed_jobs_traceback_is_shown_to_its_keyed_owner_and_not_to_others(live_url, warm_worker):
    warm_worker("failing")
    owner = {"Authorization": f"Bearer {create_key('owner')}"}
    body = poll_until_done(lambda: requests.post(f"{live_url}/failing", json={"tag": "bad"}, headers=owner, timeout=10))
    assert "traceback" not in body  # the submit-or-poll answer stays as it was
    job = f"{live_url}/jobs/{body['job_id']}"
    # The first read looks the key up (DRF); the second is the lean lane's (the key cached): the same.
    for _ in range(2):
        mine = requests.get(job, headers=owner, timeout=10).json()
        assert mine["error"] == "ValueError: cannot handle bad"
        assert mine["traceback"].startswith("Traceback (most recent call last)")
        assert mine["traceback"].rstrip().endswith("ValueError: cannot handle bad")
        assert "tests/task_types.py" in mine["traceback"]
    anonymous = requests.get(job, timeout=10).json()
    assert anonymous["error"] == mine["error"] and "traceback" not in anonymous
    someone_else = {"Authorization": f"Bearer {create_key('someone else')}"}
    assert requests.get(job, headers=someone_else, timeout=10).status_code == 404


@pytest.mark.django_db
def test_staff_see_any_failed_jobs_traceback(api, warm_worker, django_user_model):
    warm_worker("failing")
    job_id = wait_done(api, "/failing", tag="worse")["job_id"]
    assert "traceback" not in api.get(f"/jobs/{job_id}").json()
    staff = APIClient()
    staff.force_login(django_user_model.objects.create_user("staff-1", password="pw-1234-long", is_staff=True))
    assert "ValueError: cannot handle worse" in staff.get(f"/jobs/{job_id}").json()["traceback"]


@pytest.mark.django_db
def test_a_finished_job_has_no_traceback_even_for_staff(api, warm_worker, django_user_model):
    warm_worker("primes")
    job_id = wait_done(api, "/primes", n=10)["job_id"]
    staff = APIClient()
    staff.force_login(django_user_model.objects.create_user("staff-2", password="pw-1234-long", is_staff=True))
    assert "traceback" not in staff.get(f"/jobs/{job_id}").json()


def test_a_setup_failure_is_reported_in_queues_and_readyz_until_cleared(api):
    jobs.record_setup_failure(task_name="digits", error="OSError: weights.bin not found", traceback="Traceback...")
    again = jobs.record_setup_failure(task_name="digits", error="OSError: weights.bin not found")
    assert again["restarts"] == 2

    digits = next(queue for queue in api.get("/queues").json() if queue["name"] == "digits")
    assert digits["setup_error"]["error"] == "OSError: weights.bin not found"
    assert digits["setup_error"]["restarts"] == 2 and digits["setup_error"]["since"]
    assert "traceback" not in digits["setup_error"]  # /queues is public: the traceback is in the log
    primes = next(queue for queue in api.get("/queues").json() if queue["name"] == "primes")
    assert primes["setup_error"] is None

    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert set(ready.json()["setup_errors"]) == {"digits"} and "digits" in ready.json()["detail"]

    jobs.clear_setup_failures(task_names=["digits"])
    assert api.get("/readyz").json() == {"status": "ok"}


def test_a_worker_whose_setup_succeeds_clears_its_types_setup_failure(api, start_worker):
    jobs.record_setup_failure(task_name="primes", error="RuntimeError: an earlier start failed")
    start_worker("primes")  # waits until it registered, which it does after its setup
    wait_until(lambda: jobs.setup_failures() == {}, timeout=10, what="the failure cleared")
    assert api.get("/readyz").json() == {"status": "ok"}


def test_a_setup_failure_not_repeated_for_ten_minutes_is_no_longer_reported(api, redis_conn):
    failure = jobs.record_setup_failure(task_name="digits", error="OSError: weights.bin not found")
    stale = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=jobs.SETUP_FAILURE_STALE + 1)
    redis_conn.hset(keys.SETUP_FAILURES, "digits", json.dumps({**failure, "last": stale.isoformat()}))
    assert jobs.setup_failures() == {}
    assert api.get("/readyz").json() == {"status": "ok"}
