"""RQ's own tools on the service's data: django-rq's dashboard (every page, with jobs in every
state, and its Stop button), rq-dashboard's JSON, RQ's CLI (`rq info`, `rq empty`, `rq requeue`),
a worker's record naming its jobs, and what RQ does behind the service's back (its cleanup, a
requeue, an emptied queue) reconciled: truthful counts, and every change an event with an id and
the webhook deliveries it owes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django_rq.settings import get_queues_map
from rq.job import Job, JobStatus
from rq.worker import Worker

from factorize_app import jobs
from factorize_app.jobs import keys
from tests.conftest import PYTHON, ROOT, service_env, submit, wait_until
from tests.test_webhooks import Receiver, worker_env

pytestmark = pytest.mark.django_db


def rq_cli(*args: str) -> subprocess.CompletedProcess:
    """RQ's own command line, as an operator types it, against the test database."""
    command = [str(Path(PYTHON).parent / "rq"), *args[:1], "-u", settings.REDIS_URL, *args[1:]]
    done = subprocess.run(command, cwd=ROOT, env=service_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def status(api, job_id: str) -> str:
    return api.get(f"/jobs/{job_id}").json()["status"]


def queue_row(api, name: str) -> dict:
    return next(row for row in api.get("/queues").json() if row["name"] == name)


def test_every_stored_status_is_one_rq_knows_and_ours_are_still_shown(api, redis_conn):
    """An aborted job (its Cancel-After passed while queued) is `canceled` in RQ's record, where
    RQ's JobStatus reads it, and `aborted` to our clients."""
    job_id = api.post("/slow-setup", {"tag": "too-late"}, format="json", HTTP_CANCEL_AFTER="1s").json()["job_id"]
    jobs.open_events(job_ids=[job_id])  # events are written once someone reads them
    wait_until(lambda: status(api, job_id) == "aborted", timeout=10, what="the deadline to abort it")
    job = Job.fetch(job_id, connection=redis_conn)
    assert job.get_status() == JobStatus.CANCELED
    assert jobs.latest_event(job_id=job_id).status == "aborted"
    assert api.delete(f"/jobs/{job_id}").json()["status"] == "aborted"  # a 409 naming our word


@pytest.fixture
def jobs_in_every_state(api, redis_conn, warm_worker):
    """One job in each state, in queues whose workers run (or do not): queued, started,
    finished, failed, canceled, aborted. Answers {state: job id}."""
    warm_worker("factorization")
    warm_worker("failing")
    warm_worker("sleepy")
    ids = {
        "finished": submit(api, "/factorize", number=221).json()["job_id"],
        "failed": submit(api, "/failing", tag="broken").json()["job_id"],
        "started": submit(api, "/sleepy", seconds=20, tag="long").json()["job_id"],
        "queued": submit(api, "/slow-setup", tag="nobody-serves-this").json()["job_id"],
        "canceled": submit(api, "/slow-setup", tag="canceled").json()["job_id"],
    }
    aborted = api.post("/slow-setup", {"tag": "aborted"}, format="json", HTTP_CANCEL_AFTER="1s").json()["job_id"]
    ids["aborted"] = aborted
    api.delete(f"/jobs/{ids['canceled']}")
    wait_until(lambda: status(api, aborted) == "aborted", timeout=10, what="the abort")
    for state, job_id in ids.items():
        wait_until(lambda job_id=job_id, state=state: status(api, job_id) == state, timeout=30, what=state)
    yield ids
    api.delete(f"/jobs/{ids['started']}")


def test_every_django_rq_page_renders_with_jobs_in_every_state(admin_client, jobs_in_every_state, redis_conn):
    queues = get_queues_map()
    pages = ["/django-rq/", "/django-rq/stats.json"]
    for index in queues.values():
        for page in ("", "details/", "finished/", "failed/", "started/", "deferred/", "scheduled/"):
            pages.append(f"/django-rq/queues/{index}/{page}")
        pages.append(f"/django-rq/workers/{index}/")
    for job_id in jobs_in_every_state.values():
        index = queues[Job.fetch(job_id, connection=redis_conn).origin]
        pages.append(f"/django-rq/queues/{index}/{job_id}/")
    for worker in Worker.all(connection=redis_conn):
        pages.append(f"/django-rq/workers/{queues[worker.queue_names()[0]]}/{worker.key}/")
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, (page, response.status_code)
    listed = admin_client.get(f"/django-rq/queues/{queues['slow_setup']}/").content.decode()
    assert jobs_in_every_state["queued"] in listed


def test_rq_dashboard_json_answers_with_jobs_in_every_state(jobs_in_every_state, monkeypatch):
    rq_dashboard = pytest.importorskip("rq_dashboard.app", reason="rq-dashboard is a test-only requirement")
    monkeypatch.setenv("RQ_DASHBOARD_REDIS_URL", settings.REDIS_URL)
    client = rq_dashboard.create_app().test_client()
    pages = ["/rq-dashboard/0/data/queues.json", "/rq-dashboard/0/data/workers.json"]
    for name in ("factorization", "failing", "sleepy", "slow_setup"):
        for registry in ("queued", "started", "finished", "failed", "canceled", "deferred", "scheduled"):
            pages.append(f"/rq-dashboard/0/data/jobs/{name}/{registry}/8/asc/1.json")
    pages += [f"/rq-dashboard/0/data/job/{job_id}.json" for job_id in jobs_in_every_state.values()]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, (page, response.status_code, response.data[:300])
    workers = client.get("/rq-dashboard/0/data/workers.json").json["workers"]
    busy = [worker for worker in workers if worker["state"] == "busy"]
    assert [worker["current_job"]["job_id"] for worker in busy] == [jobs_in_every_state["started"]], workers


def test_a_busy_worker_names_its_job_and_the_dashboards_stop_button_stops_it(admin_client, api, redis_conn,
                                                                              warm_worker):  # fmt: skip
    worker = warm_worker("sleepy")
    job_id = submit(api, "/sleepy", seconds=25, tag="stop-me").json()["job_id"]
    wait_until(lambda: status(api, job_id) == "started", what="the job to start")
    (record,) = [w for w in Worker.all(connection=redis_conn) if w.pid == worker.process.pid]
    assert record.get_current_job_id() == job_id
    assert "busy" in rq_cli("info", "--only-workers").stdout
    index = get_queues_map()["sleepy"]
    response = admin_client.post(f"/django-rq/queues/{index}/{job_id}/stop/")
    assert response.status_code in (200, 302)
    wait_until(lambda: status(api, job_id) == "canceled", timeout=5, what="the stop to reach the job")
    assert "command ignored" not in worker.log
    # The worker serves on, and its record names no job once idle.
    assert submit(api, "/sleepy", seconds=0.1, tag="next").json()["status"] in ("queued", "started", "finished")
    wait_until(lambda: not Worker.find_by_key(record.key, connection=redis_conn).get_current_job_id(),
               what="the worker record to name no job")  # fmt: skip


def test_rq_empty_leaves_no_phantom_load(api, redis_conn):
    for tag in ("a", "b", "c"):
        submit(api, "/slow-setup", tag=tag)
    assert queue_row(api, "slow_setup")["queued"] == 3
    rq_cli("empty", "slow_setup")
    wait_until(lambda: queue_row(api, "slow_setup")["queued"] == 0, timeout=5, what="the emptied queue to count 0")
    assert submit(api, "/slow-setup", tag="d").json()["load"] == 1


@pytest.fixture
def abandoning(settings):
    """The in-process API enqueues without retries: a job whose worker dies is failed by RQ."""
    settings.JOB_MAX_RETRIES = 0


def test_a_job_rqs_cleanup_fails_gets_its_event_and_its_webhook(api, abandoning, settings, start_worker):
    receiver = Receiver()
    try:
        settings.WEBHOOK_SECRET = worker_env(receiver)["WEBHOOK_SECRET"]
        settings.WEBHOOK_ALLOWED_HOSTS = [f"127.0.0.1:{receiver.port}"]
        start_worker("webhooks", **worker_env(receiver))
        doomed = start_worker("crashing", JOB_MAX_RETRIES="0")
        response = api.post("/crashing", {"tag": "dies", "webhook": receiver.url()}, format="json")
        job_id = response.json()["job_id"]
        doomed.process.wait(30)  # its handler killed it
        # RQ's cleanup runs when an operator looks (`rq info`), once the dead worker's lease ran out.
        wait_until(lambda: "failed" in rq_cli("info", "crashing").stdout and status(api, job_id) == "failed",
                   timeout=30, interval=0.5, what="RQ's cleanup to fail the abandoned job")  # fmt: skip
        event = wait_until(lambda: (e := jobs.latest_event(job_id=job_id)) and e.status == "failed" and e,
                           timeout=10, what="the failed event")  # fmt: skip
        assert event.event_id and "abandoned" in event.outcome
        (body,) = wait_until(lambda: receiver.bodies(), timeout=15, what="the completed webhook")
        assert (body["event"], body["status"], body["job_id"]) == ("completed", "failed", job_id)
        assert body["error"].startswith("abandoned")
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def test_rq_requeue_queues_the_job_again_with_its_event_and_it_runs(api, start_worker):
    worker = start_worker("failing")
    job_id = submit(api, "/failing", tag="again").json()["job_id"]
    jobs.open_events(job_ids=[job_id])  # events are written once someone reads them
    wait_until(lambda: status(api, job_id) == "failed", what="the first failure")
    worker.stop()
    failed_at = jobs.latest_event(job_id=job_id).event_id
    rq_cli("requeue", "--queue", "failing", "--all")
    wait_until(lambda: queue_row(api, "failing")["queued"] == 1, timeout=5, what="the requeued job to count")
    assert status(api, job_id) == "queued"
    (event,) = jobs.events_after(job_id=job_id, after=failed_at)
    assert event.status == "queued" and event.event_id
    start_worker("failing")
    wait_until(lambda: status(api, job_id) == "failed", what="the requeued job to run again")
    assert [e.status for e in jobs.events_after(job_id=job_id, after=failed_at)] == ["queued", "started", "failed"]


def test_a_job_run_by_a_stock_rq_worker_leaves_no_phantom_load_and_gets_its_events(api, redis_conn):
    job_id = submit(api, "/factorize", number=4757).json()["job_id"]
    jobs.open_events(job_ids=[job_id])  # events are written once someone reads them
    stock_worker = (
        "import django; django.setup(); from rq import SimpleWorker; from factorize_app.jobs.connection import "
        "redis_connection; SimpleWorker(['factorization'], connection=redis_connection()).work(burst=True)"
    )
    stock = subprocess.run([PYTHON, "-c", stock_worker], cwd=ROOT, env=service_env(PYTHONPATH=str(ROOT)),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert stock.returncode == 0, stock.stderr
    assert Job.fetch(job_id, connection=redis_conn).get_status() == JobStatus.FINISHED
    wait_until(lambda: queue_row(api, "factorization")["queued"] == 0, timeout=5, what="no phantom")
    events = wait_until(lambda: jobs.events_after(job_id=job_id, after="0-0") or None, timeout=5, what="events")
    assert events[-1].status == "finished" and all(e.event_id for e in events)
    assert api.get(f"/jobs/{job_id}").json()["factorization"] == [[67, 1], [71, 1]]


def test_a_worker_mends_the_aborted_status_an_earlier_version_stored(api, redis_conn, start_worker):
    job_id = api.post("/slow-setup", {"tag": "old"}, format="json", HTTP_CANCEL_AFTER="1s").json()["job_id"]
    wait_until(lambda: status(api, job_id) == "aborted", timeout=10, what="the abort")
    redis_conn.hset(keys.job(job_id), mapping={"status": "aborted"})  # as the last version stored it
    redis_conn.hdel(keys.job(job_id), keys.STATE_FIELD)
    assert status(api, job_id) == "aborted"  # our clients saw it so all along
    start_worker("slow_setup")
    wait_until(lambda: redis_conn.hget(keys.job(job_id), "status") == b"canceled", what="the worker to mend it")
    assert Job.fetch(job_id, connection=redis_conn).get_status() == JobStatus.CANCELED
    assert status(api, job_id) == "aborted"
