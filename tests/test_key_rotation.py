"""Job ids survive a SECRET_KEY rotation: their key is the deployment's own, stored in Redis.

Real web servers and workers, restarted with another SECRET_KEY (and no JOB_ID_KEY) under
finished and queued jobs: every id still answers, a repeated POST polls the same job, and the
queued jobs run. Also the upgrade from the versions whose ids derived from SECRET_KEY, a fresh
Redis, and a flushed one.
"""

from __future__ import annotations

import hashlib
import hmac

import requests

from factorize_app.jobs import keys
from factorize_app.jobs.ids import canonical, forget_stored_key, job_id_for, legacy_key
from factorize_app.tasks import get_task_type
from tests.conftest import poll_until_done, web_server

OLD_KEY = "rotation-test-old-secret-key-" + "o" * 40
NEW_KEY = "rotation-test-new-secret-key-" + "n" * 40
FINISHED = [360, 1001, 2**32 + 1]
QUEUED = [408216, 99991, 2**40 + 15]


def stack(secret_key: str) -> dict[str, str]:
    """The environment of a service process with this SECRET_KEY and no explicit id key."""
    return {"SECRET_KEY": secret_key, "JOB_ID_KEY": ""}


def post(url: str, number: int) -> dict:
    response = requests.post(f"{url}/factorize", json={"number": number}, timeout=10)
    assert response.status_code in (200, 202), response.text
    return response.json()


def get(url: str, job_id: str) -> requests.Response:
    return requests.get(f"{url}/jobs/{job_id}", timeout=10)


def submit_finished_and_queued(url: str, start_worker) -> dict[int, dict]:
    """Jobs of the first key: some finished (a worker ran them), some queued (no worker left)."""
    worker = start_worker("factorization", **stack(OLD_KEY))
    finished = {
        n: poll_until_done(lambda n=n: requests.post(f"{url}/factorize", json={"number": n}, timeout=10))
        for n in FINISHED
    }
    worker.stop()
    queued = {n: post(url, n) for n in QUEUED}
    assert all(body["status"] == "queued" for body in queued.values())
    return {**finished, **queued}


def assert_every_job_answers_and_the_queued_ones_run(url: str, before: dict[int, dict], start_worker) -> None:
    for number, body in before.items():
        by_id = get(url, body["job_id"])
        assert by_id.status_code in (200, 202), (number, by_id.text)
        assert by_id.json()["status"] == body["status"]
        assert post(url, number)["job_id"] == body["job_id"]  # the same input polls the same job
    worker = start_worker("factorization", **stack(NEW_KEY))
    for number in QUEUED:
        done = poll_until_done(
            lambda number=number: requests.post(f"{url}/factorize", json={"number": number}, timeout=10)
        )
        assert done["job_id"] == before[number]["job_id"]
        assert done["status"] == "finished", done
    assert "has no input" not in worker.log


def test_rotating_secret_key_keeps_every_job_answering_and_running(redis_conn, start_worker):
    with web_server(**stack(OLD_KEY)) as url:
        before = submit_finished_and_queued(url, start_worker)
    stored = redis_conn.get(keys.JOB_ID_KEY)
    assert stored is not None and stored != legacy_key(OLD_KEY).hex().encode()  # a fresh Redis: a random key
    with web_server(**stack(NEW_KEY)) as url:
        assert_every_job_answers_and_the_queued_ones_run(url, before, start_worker)
    assert redis_conn.get(keys.JOB_ID_KEY) == stored


def test_an_upgraded_deployment_adopts_the_key_its_ids_were_made_with(redis_conn, start_worker):
    # The state an earlier version leaves: ids keyed with the key derived from SECRET_KEY, none stored.
    redis_conn.set(keys.JOB_ID_KEY, legacy_key(OLD_KEY).hex())
    with web_server(**stack(OLD_KEY)) as url:
        before = submit_finished_and_queued(url, start_worker)
    task_type = get_task_type("factorization")
    assert before[360]["job_id"] == legacy_id(task_type, {"number": 360}, OLD_KEY)
    redis_conn.delete(keys.JOB_ID_KEY)
    # The first start of this version, with the same SECRET_KEY, stores the key the jobs were named with.
    with web_server(**stack(OLD_KEY)) as url:
        assert get(url, before[360]["job_id"]).status_code == 200
    assert redis_conn.get(keys.JOB_ID_KEY) == legacy_key(OLD_KEY).hex().encode()
    # From then on, the SECRET_KEY can change.
    with web_server(**stack(NEW_KEY)) as url:
        assert_every_job_answers_and_the_queued_ones_run(url, before, start_worker)


def legacy_id(task_type, data: dict, secret_key: str) -> str:
    """An id as the versions before the stored key made it."""
    digest = hmac.new(legacy_key(secret_key), canonical(data).encode(), hashlib.sha256).hexdigest()
    return f"{task_type.name}-{digest[:32]}"


def test_a_flushed_redis_gets_back_the_key_the_running_processes_use(redis_conn, settings, monkeypatch):
    settings.JOB_ID_KEY = ""
    monkeypatch.setattr("factorize_app.jobs.ids.RECHECK_SECONDS", 0)
    forget_stored_key()
    task_type = get_task_type("factorization")
    first = job_id_for(task_type, {"number": 12})
    stored = redis_conn.get(keys.JOB_ID_KEY)
    assert stored is not None
    redis_conn.flushdb()
    # This process still names jobs as before, and stores its key back for the processes to come.
    assert job_id_for(task_type, {"number": 12}) == first
    assert redis_conn.get(keys.JOB_ID_KEY) == stored
    forget_stored_key()
    assert job_id_for(task_type, {"number": 12}) == first


def test_an_explicit_job_id_key_overrides_the_stored_one(redis_conn, settings):
    settings.JOB_ID_KEY = "an explicit key"
    forget_stored_key()
    task_type = get_task_type("factorization")
    explicit = job_id_for(task_type, {"number": 12})
    assert not redis_conn.exists(keys.JOB_ID_KEY)
    settings.JOB_ID_KEY = "another explicit key"
    assert job_id_for(task_type, {"number": 12}) != explicit
