"""A web server told to stop (SIGTERM: `docker stop`, a rolling upgrade, a pod deleted) answers
every request it holds at once, with the job's current state, stops being ready, and exits: the
real servers (scripts/serve.sh: granian, and gunicorn) with requests held in real Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
import requests

from tests.conftest import PYTHON, ROOT, process_tree, server_pid, service_env, wait_until, web_server
from tests.test_event_stream import read_events

STREAM = {"Accept": "text/event-stream"}
HELD = {"Prefer": "wait=60"}


def blocked_reads(redis_conn: redis.Redis) -> int:
    """Clients blocked in XREAD on the test's Redis: held polls and the streams' dispatcher."""
    db = redis_conn.connection_pool.connection_kwargs.get("db", 0)
    return sum(
        1 for client in redis_conn.client_list() if client["cmd"] == "xread" and "b" in client["flags"]
        and int(client["db"]) == db
    )  # fmt: skip


def main_process(url: str) -> int:
    """The server's main process (the one `docker stop` signals), which this test started: granian's
    workers hold the listening socket and its main process does not, so conftest.server_pid()
    finds a worker there; walk up to the child of this process."""
    pid = server_pid(url)
    while (parent := int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])) != os.getpid():
        pid = parent
    return pid


def gone(pid: int) -> bool:
    """The process has exited (a zombie still waiting for its parent counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_a_stopping_server_answers_every_held_request_at_once_then_exits(server, redis_conn):
    # Killed only 30 s after the stop signal: an exit within seconds is the server's own.
    with web_server(WEB_SERVER=server, WEB_KILL_TIMEOUT="30", EVENT_STREAM_KEEPALIVE="60") as url:
        queued = requests.post(f"{url}/factorize", json={"number": 8051}, timeout=10).json()  # no worker runs
        job = queued["job_id"]
        answers: dict[str, object] = {}

        def hold(name, method, path, **kwargs):
            try:
                response = requests.request(method, f"{url}{path}", timeout=90, **kwargs)
                answers[name] = (response, time.monotonic())
            except requests.RequestException as exc:  # an empty reply or a reset: the failure we fix
                answers[name] = (exc, time.monotonic())

        holds = {
            "poll": ("GET", f"/jobs/{job}", {"headers": HELD}),
            "submit": ("POST", "/factorize", {"headers": HELD, "json": {"number": 8051}}),
            "batch": ("POST", "/factorize/batch", {"headers": HELD, "json": {"items": [{"number": 8051}]}}),
        }
        threads = [threading.Thread(target=hold, args=(name, m, p), kwargs=kw) for name, (m, p, kw) in holds.items()]
        for thread in threads:
            thread.start()
        stream = requests.get(f"{url}/jobs/{job}", headers=STREAM, stream=True, timeout=(10, 20))
        events = read_events(stream)
        assert next(events)["data"]["status"] == "queued"
        # Three polls blocked in their XREAD, and the stream's dispatcher in its own.
        wait_until(lambda: blocked_reads(redis_conn) >= 4, timeout=30, what="every request to be held")

        pid = main_process(url)
        workers = [child for child in process_tree(pid) if child != pid]
        assert workers, "the server's own worker processes (they get the signal from it)"
        stopped = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        rest = list(events)  # until the server ends the stream
        stream_ended = time.monotonic()
        for thread in threads:
            thread.join(30)
        wait_until(lambda: all(gone(each) for each in [pid, *workers]), timeout=30, what="the server to exit")
        exited = time.monotonic()

    for name in holds:
        response, answered = answers[name]
        assert isinstance(response, requests.Response), f"{name}: {response!r}"
        assert answered - stopped < 5, f"{name}: held {answered - stopped:.1f} s after the stop signal"
        if name == "batch":
            assert response.status_code == 200 and response.json()["results"][0]["status"] == "queued"
        else:
            assert response.status_code == 202 and response.json()["status"] == "queued", name
            assert response.headers["Retry-After"] == "1" and response.headers["Location"] == f"/jobs/{job}"
    assert stream_ended - stopped < 5
    *state, last = rest
    assert [event["data"]["status"] for event in state if "data" in event] == ["queued"]
    assert "id" not in state[-1], "the state as it stands is no stream entry: a reconnection resumes after the last"
    assert last == {"retry": "1000"}, "EventSource reconnects in POLL_RETRY_AFTER (to another server)"
    assert exited - stopped < 10, f"exited {exited - stopped:.1f} s after the stop signal"


def test_a_stopping_process_reports_not_ready_and_holds_nothing_more(redis_conn):
    """In one process (Django's test client): once draining, /readyz is 503 and a `Prefer: wait`
    poll answers at once, without Preference-Applied (its wait was not applied)."""
    script = """
import json, time
import django
django.setup()
from django.test import Client
from factorize_app.api import shutdown
client = Client()
job = client.post("/factorize", {"number": 8053}, content_type="application/json").json()["job_id"]
before = client.get("/readyz").status_code
shutdown.begin_drain("test")
ready = client.get("/readyz")
started = time.monotonic()
poll = client.get(f"/jobs/{job}", HTTP_PREFER="wait=30")
print(json.dumps({
    "before": before, "ready": ready.status_code, "ready_status": ready.json()["status"],
    "poll": poll.status_code, "retry_after": poll.get("Retry-After"),
    "applied": poll.has_header("Preference-Applied"), "seconds": time.monotonic() - started,
}))
"""
    env = service_env(ALLOWED_HOSTS="testserver")
    done = subprocess.run([PYTHON, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["before"] == 200
    assert (answer["ready"], answer["ready_status"]) == (503, "draining")
    assert (answer["poll"], answer["retry_after"], answer["applied"]) == (202, "1", False)
    assert answer["seconds"] < 5
