"""Completion webhooks end to end: a real receiver on a loopback port, real model workers and a real
webhooks worker (`manage.py rqworker webhooks`, or the child of plain `rqworker`).

Signed deliveries that verify, retries under one webhook-id, a SIGKILLed delivering worker
catching up after its restart, the allow-list at submit and the address check at delivery,
redirects not followed, a slow receiver beside a model worker that keeps working, the events
filter, a webhook added to a job already done, two clients on one input, /metrics."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rest_framework.test import APIClient
from rq.worker import Worker
from standardwebhooks import Webhook

from tests.conftest import PYTHON, ROOT, free_port, service_env, wait_until

SECRET = "whsec_" + base64.b64encode(b"a test key of thirty-two bytes!!").decode()


class Receiver:
    """A webhook receiver: records every request; answers from `answers` (status, seconds to
    sleep first, extra headers), then 200."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict] = []
        self.answers: list[tuple[int, float, dict]] = []
        self.hanging = 0  # requests being answered slowly right now
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    status, sleep, headers = receiver.answers.pop(0) if receiver.answers else (200, 0, {})
                if sleep:
                    with receiver.lock:
                        receiver.hanging += 1
                    time.sleep(sleep)
                    with receiver.lock:
                        receiver.hanging -= 1
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up (its timeout) or died

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str | None = None) -> list[dict]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests if path is None or r["path"] == path]

    def ids(self) -> list[str]:
        with self.lock:
            return [r["headers"]["webhook-id"] for r in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def webhook_settings(settings, receiver):
    """The in-process API's settings; `worker_env` gives the workers the same."""
    settings.WEBHOOK_SECRET = SECRET
    settings.WEBHOOK_ALLOWED_HOSTS = [f"127.0.0.1:{receiver.port}"]
    return settings


def worker_env(receiver: Receiver, **overrides: str) -> dict[str, str]:
    env = {
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_ALLOWED_HOSTS": f"127.0.0.1:{receiver.port}",
        "WEBHOOK_RETRY_DELAYS": "0.2,0.2,0.2",
        "WEBHOOK_TIMEOUT": "2",
    }
    return {**env, **overrides}


def post(api: APIClient, path: str, **body):
    return api.post(path, body, format="json")


def subscriptions(api: APIClient, job_id: str) -> list[dict]:
    response = api.get(f"/jobs/{job_id}/webhooks")
    assert response.status_code == 200, response.content
    return response.json()["subscriptions"]


def verify_by_hand(secret: str, headers: dict, body: bytes) -> bool:
    """The receiver docs/api.md shows: a few lines of hmac."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s.removeprefix("v1,")) for s in headers["webhook-signature"].split())


def test_a_finished_jobs_webhook_arrives_signed_once(api, receiver, webhook_settings, start_worker):
    start_worker("factorization")
    start_worker("webhooks", **worker_env(receiver))
    first = post(api, "/factorize", number=91, webhook=receiver.url())
    assert first.status_code in (200, 202), first.content
    job_id = first.json()["job_id"]
    assert "webhook" not in first.json()
    secret = first.json()["webhook_secret"]  # this client's, for this receiver
    assert secret.startswith("whsec_") and secret != SECRET
    # The same client polling with the same webhook subscribes nothing new (and has the same secret).
    assert post(api, "/factorize", number=91, webhook=receiver.url()).json()["webhook_secret"] == secret
    wait_until(lambda: receiver.requests, what="the webhook")
    time.sleep(1)  # room for a duplicate to show up
    (request,) = receiver.requests
    headers = {name.lower(): value for name, value in request["headers"].items()}
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"].startswith("msg_")
    body = Webhook(secret).verify(request["body"], headers)
    assert verify_by_hand(secret, headers, request["body"])
    assert not verify_by_hand(SECRET, headers, request["body"])  # the service's own key signs nothing
    assert not verify_by_hand("whsec_" + base64.b64encode(b"another key of 32 bytes........").decode(), headers,
                              request["body"])  # fmt: skip
    assert body["event"] == "completed"
    assert body == {**api.get(f"/jobs/{job_id}").json(), "event": "completed", "load": body["load"]}
    assert body["factorization"] == [[7, 1], [13, 1]] and body["done"] is True and body["status"] == "finished"
    (subscription,) = wait_until(
        lambda: [s for s in subscriptions(api, job_id) if s["state"] == "delivered"] or None, what="delivered"
    )
    assert subscription["events"] == ["completed"] and subscription["secret"] == secret
    (delivery,) = subscription["deliveries"]
    assert delivery["webhook_id"] == headers["webhook-id"]
    assert (delivery["status"], delivery["attempts"], delivery["last_status"]) == ("delivered", 1, 200)
    assert api.get("/jobs/factorization-" + "0" * 32 + "/webhooks").status_code == 404


def test_a_receiver_failing_twice_gets_the_same_webhook_id_three_times(api, receiver, webhook_settings, start_worker):
    receiver.answers = [(500, 0, {}), (503, 0, {})]
    start_worker("factorization")
    start_worker("webhooks", **worker_env(receiver))
    job_id = post(api, "/factorize", number=77, webhook=receiver.url()).json()["job_id"]
    wait_until(lambda: len(receiver.requests) >= 3, what="three attempts")
    time.sleep(0.6)
    ids = receiver.ids()
    assert len(ids) == 3 and len(set(ids)) == 1
    bodies = receiver.bodies()
    assert bodies[0] == bodies[1] == bodies[2]
    (delivery,) = wait_until(
        lambda: [d for s in subscriptions(api, job_id) for d in s["deliveries"] if d["status"] == "delivered"],
        what="recorded delivered",
    )
    assert (delivery["attempts"], delivery["last_status"], delivery["last_error"]) == (3, 200, None)
    metrics = api.get("/metrics").content.decode()
    assert 'factorize_webhook_deliveries_total{event="completed",outcome="retried"} 2.0' in metrics
    assert 'factorize_webhook_deliveries_total{event="completed",outcome="delivered"} 1.0' in metrics


def test_a_redirect_is_not_followed_and_the_delivery_fails_after_its_retries(
    api, receiver, webhook_settings, start_worker
):
    receiver.answers = [(302, 0, {"Location": receiver.url("/elsewhere")})] * 4
    start_worker("factorization")
    start_worker("webhooks", **worker_env(receiver))
    job_id = post(api, "/factorize", number=55, webhook=receiver.url()).json()["job_id"]
    (delivery,) = wait_until(
        lambda: [d for s in subscriptions(api, job_id) for d in s["deliveries"] if d["status"] == "failed"],
        what="the delivery to fail",
    )
    assert delivery["attempts"] == 4 and delivery["last_status"] == 302  # 1 + WEBHOOK_RETRY_DELAYS
    assert [r["path"] for r in receiver.requests] == ["/hook"] * 4
    assert subscriptions(api, job_id)[0]["state"] == "failed"
    assert (
        'factorize_webhook_deliveries_total{event="completed",outcome="failed"} 1.0'
        in api.get("/metrics").content.decode()
    )


def test_a_sigkilled_delivering_worker_delivers_what_was_pending_after_its_restart(
    api, receiver, webhook_settings, start_worker
):
    """At the kill: one delivery due for a retry, one in flight (its receiver hangs), one queued
    (the worker's one thread is busy). After the restart, each arrives and is answered 200."""
    receiver.answers = [(500, 0, {}), (200, 20, {})]
    env = worker_env(receiver, WEBHOOK_CONCURRENCY="1", WEBHOOK_RETRY_DELAYS="3", WEBHOOK_TIMEOUT="1")
    start_worker("sleepy")
    job_ids = []
    for tag in ("a", "b", "c"):
        job_ids.append(post(api, "/sleepy", seconds=0, tag=tag, webhook=receiver.url()).json()["job_id"])
        wait_until(lambda: api.get(f"/jobs/{job_ids[-1]}").json()["done"], what=f"job {tag}")
    webhooks = start_worker("webhooks", **env)
    wait_until(lambda: receiver.hanging == 1 and len(receiver.requests) == 2, what="a retry due and one in flight")
    webhooks.stop(signal.SIGKILL)
    start_worker("webhooks", **env)
    answered = {}

    def all_delivered():
        for job_id in job_ids:
            states = [d["status"] for s in subscriptions(api, job_id) for d in s["deliveries"]]
            answered[job_id] = states
        return all(states == ["delivered"] for states in answered.values())

    wait_until(all_delivered, timeout=40, what="every delivery after the restart")
    ids = receiver.ids()
    assert len(set(ids)) == 3  # three deliveries, each under its own id on every attempt
    assert len(ids) >= 4  # a retry of the one that failed and of the one in flight at the kill


def test_a_url_outside_the_allow_list_is_a_400_naming_webhook(api, receiver, webhook_settings, redis_conn):
    for url in ("http://127.0.0.1:1/hook", f"ftp://127.0.0.1:{receiver.port}/", "not a url",
                f"http://user:pw@127.0.0.1:{receiver.port}/", f"http://10.0.0.1:{receiver.port}/"):  # fmt: skip
        response = post(api, "/factorize", number=91, webhook=url)
        assert response.status_code == 400, (url, response.content)
        assert "webhook" in response.json(), response.json()
    bad_filter = post(api, "/factorize", number=91, webhook=receiver.url(), webhook_events_filter=["finished"])
    assert bad_filter.status_code == 400 and "webhook_events_filter" in bad_filter.json()
    batch = api.post("/factorize/batch", {"items": [{"number": 91, "webhook": "http://x.example/"}]}, format="json")
    assert batch.json()["results"][0]["status"] == "invalid" and "webhook" in batch.json()["results"][0]["errors"]
    assert not redis_conn.keys("rq:job:*")  # nothing was enqueued


def test_without_a_secret_or_an_allow_list_webhooks_are_refused(api, receiver, settings):
    settings.WEBHOOK_SECRET = ""
    settings.WEBHOOK_ALLOWED_HOSTS = [f"127.0.0.1:{receiver.port}"]
    assert "webhook" in post(api, "/factorize", number=91, webhook=receiver.url()).json()
    settings.WEBHOOK_SECRET = SECRET
    settings.WEBHOOK_ALLOWED_HOSTS = []
    response = post(api, "/factorize", number=91, webhook=receiver.url())
    assert response.status_code == 400 and "webhook" in response.json()


def test_a_malformed_secret_refuses_the_start_in_one_line():
    result = subprocess.run(
        [PYTHON, "manage.py", "check"],
        cwd=ROOT,
        env=service_env(WEBHOOK_SECRET="whsec_not base64!"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "WEBHOOK_SECRET must be" in result.stderr.strip().splitlines()[-1]


def test_an_allowed_name_resolving_to_an_unlisted_loopback_address_is_refused_at_delivery(
    api, receiver, settings, start_worker
):
    settings.WEBHOOK_SECRET = SECRET
    settings.WEBHOOK_ALLOWED_HOSTS = [f"localhost:{receiver.port}"]
    start_worker("factorization")
    start_worker("webhooks", **worker_env(receiver, WEBHOOK_ALLOWED_HOSTS=f"localhost:{receiver.port}"))
    response = post(api, "/factorize", number=91, webhook=f"http://localhost:{receiver.port}/hook")
    assert response.status_code in (200, 202), response.content  # the name is allowed
    job_id = response.json()["job_id"]
    (delivery,) = wait_until(
        lambda: [d for s in subscriptions(api, job_id) for d in s["deliveries"] if d["status"] == "failed"],
        what="the delivery to be refused",
    )
    assert delivery["attempts"] == 1 and delivery["last_error"].startswith("refused: localhost resolves to")
    assert receiver.requests == []


def test_a_slow_receiver_never_delays_the_model_workers_next_job(api, receiver, webhook_settings, start_worker):
    """Plain `rqworker` (every queue, the webhooks worker in a child process): while a delivery
    hangs on a receiver sleeping past WEBHOOK_TIMEOUT, the model worker's next job completes."""
    receiver.answers = [(200, 30, {})]
    parent = start_worker(**worker_env(receiver, WEBHOOK_TIMEOUT="20"))
    webhook_workers = wait_until(
        lambda: [
            w
            for w in Worker.all(connection=__import__("django_rq").get_connection("sleepy"))
            if w.queue_names() == ["webhooks"]
        ],  # fmt: skip
        what="the webhooks child to register",
    )
    assert webhook_workers[0].pid != parent.process.pid  # deliveries never in a model worker's process
    job = post(api, "/sleepy", seconds=0, tag="first", webhook=receiver.url()).json()["job_id"]
    wait_until(lambda: receiver.hanging == 1, what="the delivery to hang")
    second = post(api, "/sleepy", seconds=0, tag="second").json()["job_id"]
    wait_until(lambda: api.get(f"/jobs/{second}").json()["done"], what="the next job")
    assert receiver.hanging == 1  # still hanging: the model worker did not wait for it
    assert [d["status"] for s in subscriptions(api, job) for d in s["deliveries"]] == ["pending"]


def test_the_events_filter_start_progress_completed(api, receiver, webhook_settings, start_worker):
    from sympy import nextprime

    hard = nextprime(10**19) * nextprime(3 * 10**20)  # seconds of ECM, reporting progress
    start_worker("webhooks", **worker_env(receiver))
    every = ["start", "progress", "completed"]
    job_id = post(api, "/factorize", number=str(hard), webhook=receiver.url("/all"), webhook_events_filter=every)
    job_id = job_id.json()["job_id"]
    post(api, "/factorize", number=str(hard), webhook=receiver.url("/start"), webhook_events_filter=["start"])
    start_worker("factorization")
    wait_until(lambda: [b for b in receiver.bodies("/all") if b["event"] == "completed"], timeout=60, what="the end")
    events = [body["event"] for body in receiver.bodies("/all")]
    assert events[0] == "start" and events[-1] == "completed" and "progress" in events, events
    assert set(events[1:-1]) == {"progress"}
    progress = [b for b in receiver.bodies("/all") if b["event"] == "progress"]
    assert all(b["status"] == "started" and b["progress"]["message"] for b in progress)
    assert receiver.bodies("/all")[0]["job_id"] == job_id
    assert [body["event"] for body in receiver.bodies("/start")] == ["start"]


def test_a_webhook_added_to_a_job_already_done_is_delivered_at_once(api, receiver, webhook_settings, start_worker):
    start_worker("factorization")
    done = wait_until(lambda: post(api, "/factorize", number=35).json()["done"], what="the job")
    assert done
    start_worker("webhooks", **worker_env(receiver))
    response = post(api, "/factorize", number=35, webhook=receiver.url(), webhook_events_filter=["start", "completed"])
    assert response.status_code == 200
    wait_until(lambda: receiver.requests, what="the webhook")
    (body,) = receiver.bodies()
    assert body["event"] == "completed" and body["factorization"] == [[5, 1], [7, 1]]


def test_two_clients_with_different_webhooks_on_one_input_are_both_notified(receiver, webhook_settings, start_worker):
    alice, bob = APIClient(REMOTE_ADDR="10.1.0.1"), APIClient(REMOTE_ADDR="10.1.0.2")
    start_worker("webhooks", **worker_env(receiver))
    first = post(alice, "/factorize", number=143, webhook=receiver.url("/alice")).json()["job_id"]
    second = post(bob, "/factorize", number=143, webhook=receiver.url("/bob")).json()["job_id"]
    assert first == second  # the job id is the input's alone
    start_worker("factorization")
    wait_until(lambda: receiver.bodies("/alice") and receiver.bodies("/bob"), what="both webhooks")
    assert (
        receiver.bodies("/alice")[0]["factorization"]
        == receiver.bodies("/bob")[0]["factorization"]
        == [[11, 1], [13, 1]]
    )
    assert [s["url"] for s in subscriptions(alice, first)] == [receiver.url("/alice")]  # each sees its own
    assert [s["url"] for s in subscriptions(bob, first)] == [receiver.url("/bob")]


def test_workerhealth_judges_the_webhooks_worker_by_its_heartbeat(receiver, redis_conn, start_worker):
    def health() -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "manage.py", "workerhealth", "--max-age", "3"], cwd=ROOT, env=service_env(),
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    webhooks = start_worker("webhooks", **worker_env(receiver))
    (record,) = [w for w in Worker.all(connection=redis_conn) if w.pid == webhooks.process.pid]
    born = record.last_heartbeat
    wait_until(  # idle, it beats (WORKER_HEARTBEAT=1 in the tests)
        lambda: (record.refresh(), record.last_heartbeat)[1] > born, timeout=10, what="an idle heartbeat"
    )
    assert health().returncode == 0, health().stdout + health().stderr
    webhooks.stop()
    assert health().returncode != 0
