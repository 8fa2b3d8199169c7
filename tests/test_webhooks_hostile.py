"""Webhooks under a hostile client: receivers that drip or die mid-answer, fan-out batches, many
receivers on distinct loopback addresses, embedded forms of private addresses, replayed signatures.

Every receiver here is a raw socket server started by the test on 127.0.0.0/8, so it can answer
what no HTTP server library would: a status line and then a byte every 2 s, or half a header."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from rest_framework.test import APIClient
from standardwebhooks import Webhook, WebhookVerificationError

from factorize_app.jobs import non_public
from factorize_app.jobs.events import JobEvent
from factorize_app.webhooks.dispatcher import _plan
from tests.conftest import wait_until
from tests.test_webhooks import SECRET, Receiver, post, subscriptions


class RawReceiver:
    """A TCP server on `host` that reads a request's headers, then sends `answer` (bytes) and, if
    `drip` is set, one byte of `drip` every `every` seconds; closes when told or when the peer does.
    Records each connection's start, end and the most open at once."""

    def __init__(self, host: str = "127.0.0.1", *, answer: bytes, drip: bytes = b"", every: float = 2.0) -> None:
        self.host, self.answer, self.drip, self.every = host, answer, drip, every
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.connections: list[dict] = []
        self.open = self.most_open = 0
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def allowed(self) -> str:
        return f"{self.host}:{self.port}"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        record = {"start": time.monotonic(), "end": None, "request": b""}
        with self.lock:
            self.connections.append(record)
            self.open += 1
            self.most_open = max(self.most_open, self.open)
        try:
            conn.settimeout(30)
            while not self._whole(record["request"]):  # the whole request: closing on an unread
                chunk = conn.recv(65536)  # body would reset the connection, not close it
                if not chunk:
                    break
                record["request"] += chunk
            conn.sendall(self.answer)
            for byte in self.drip:
                if not self._wait_open(conn, self.every):
                    break  # the sender closed the connection: this is when the attempt ended
                conn.sendall(bytes([byte]))
        except OSError:
            pass
        finally:
            conn.close()
            with self.lock:
                record["end"] = time.monotonic()
                self.open -= 1

    @staticmethod
    def _whole(request: bytes) -> bool:
        head, found, body = request.partition(b"\r\n\r\n")
        if not found:
            return False
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        return len(body) >= (int(length.group(1)) if length else 0)

    def _wait_open(self, conn: socket.socket, seconds: float) -> bool:
        """Wait `seconds` reading what the sender sends (the rest of its body); False once it
        closed the connection (or the test ends)."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0 and not self.stopped.is_set():
            readable, _, _ = select.select([conn], [], [], left)
            if readable and not conn.recv(65536):
                return False
        return not self.stopped.is_set()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture
def raw_receivers() -> Iterator[list[RawReceiver]]:
    made: list[RawReceiver] = []
    yield made
    for one in made:
        one.close()


@pytest.fixture
def healthy() -> Iterator[Receiver]:
    """A receiver answering 200 at once (tests/test_webhooks.py's)."""
    one = Receiver()
    yield one
    one.server.shutdown()
    one.server.server_close()


def hooks_env(*allowed: str, **overrides: str) -> dict[str, str]:
    return {
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_ALLOWED_HOSTS": ",".join(allowed),
        "WEBHOOK_RETRY_DELAYS": "0.2,0.2",
        "WEBHOOK_TIMEOUT": "2",
        **overrides,
    }


def deliveries(api: APIClient, job_id: str) -> list[dict]:
    return [d for s in subscriptions(api, job_id) for d in s["deliveries"]]


DRIP = b"X-Drip: " + b"a" * 200 + b"\r\n\r\n"
# Whole headers saying the connection closes after the answer (http.client then lets go of its
# socket as the answer begins), and a body dripped a byte at a time.
CLOSING_HEADERS = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    "answer, drip", [(b"HTTP/1.1 200 OK\r\n", DRIP), (CLOSING_HEADERS, b"b" * 200)], ids=["headers", "body"]
)
def test_a_dripping_receiver_is_cut_off_at_the_timeout_never_twice_at_once_and_within_the_attempts(
    api, settings, raw_receivers, start_worker, answer, drip
):
    """Its headers or its body a byte at a time: each attempt ends by WEBHOOK_TIMEOUT (2 s here),
    one at a time, 3 attempts (1 + 2 retry delays), then failed."""
    dripping = RawReceiver(answer=answer, drip=drip, every=0.5)
    raw_receivers.append(dripping)
    settings.WEBHOOK_SECRET, settings.WEBHOOK_ALLOWED_HOSTS = SECRET, [dripping.allowed()]
    start_worker("webhooks", **hooks_env(dripping.allowed()))
    start_worker("factorization")
    job_id = post(api, "/factorize", number=91, webhook=dripping.url()).json()["job_id"]
    (delivery,) = wait_until(
        lambda: [d for d in deliveries(api, job_id) if d["status"] == "failed"], timeout=60, what="failed"
    )
    assert delivery["attempts"] == 3, delivery
    assert "WEBHOOK_TIMEOUT" in delivery["last_error"], delivery
    wait_until(lambda: dripping.open == 0, what="the last connection to close")
    assert len(dripping.connections) == 3 and dripping.most_open == 1
    for connection in dripping.connections:
        assert connection["end"] - connection["start"] < 2 + 1.5, connection  # cut off, not held
    time.sleep(1)
    assert deliveries(api, job_id)[0]["attempts"] == 3  # nothing tried after it failed


def test_a_receiver_that_dies_within_its_headers_is_a_failure_not_a_delivery(
    api, settings, raw_receivers, start_worker
):
    dying = RawReceiver(answer=b"HTTP/1.1 200 OK\r\nContent-Ty")
    raw_receivers.append(dying)
    settings.WEBHOOK_SECRET, settings.WEBHOOK_ALLOWED_HOSTS = SECRET, [dying.allowed()]
    start_worker("webhooks", **hooks_env(dying.allowed()))
    start_worker("factorization")
    job_id = post(api, "/factorize", number=95, webhook=dying.url()).json()["job_id"]
    (delivery,) = wait_until(
        lambda: [d for d in deliveries(api, job_id) if d["status"] != "pending"], timeout=60, what="an end"
    )
    assert delivery["status"] == "failed" and delivery["attempts"] == 3, delivery
    assert "closed the connection within its headers" in delivery["last_error"], delivery


def test_one_batch_of_one_input_with_a_thousand_webhooks_makes_at_most_the_per_job_cap(api, settings, redis_conn):
    settings.WEBHOOK_SECRET, settings.WEBHOOK_ALLOWED_HOSTS = SECRET, ["hooks.example"]
    items = [{"number": 1009 * 1013, "webhook": f"http://hooks.example/h?i={i}"} for i in range(1000)]
    response = api.post("/factorize/batch", {"items": items}, format="json")
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    taken = [r for r in results if r["status"] != "invalid"]
    refused = [r for r in results if r["status"] == "invalid"]
    assert len(taken) == settings.WEBHOOK_MAX_PER_JOB == 5 and len(refused) == 995
    assert all("per client on one job" in r["errors"]["webhook"][0] for r in refused)
    assert all(r["webhook_secret"] == taken[0]["webhook_secret"] for r in taken)  # one receiver, one secret
    job_id = taken[0]["job_id"]
    assert len(subscriptions(api, job_id)) == 5
    # Posting the batch again subscribes nothing more, for this client or in Redis.
    again = api.post("/factorize/batch", {"items": items}, format="json").json()["results"]
    assert sum(r["status"] != "invalid" for r in again) == 5 and len(subscriptions(api, job_id)) == 5
    assert redis_conn.hlen(f"factorize:webhooks:subscriptions:{job_id}") == 5
    started = time.perf_counter()
    subscriptions(api, job_id)
    print(f"\nsubscriptions one 1,000-item batch of one input made: {len(subscriptions(api, job_id))}; "
          f"GET /jobs/<id>/webhooks took {(time.perf_counter() - started) * 1000:.1f} ms")  # fmt: skip


def test_a_clients_live_subscriptions_are_capped_and_count_against_its_submit_rate(api, settings):
    settings.WEBHOOK_SECRET, settings.WEBHOOK_ALLOWED_HOSTS = SECRET, ["hooks.example"]
    settings.WEBHOOK_MAX_PER_CLIENT = 3
    for number in (1001, 1003, 1007):
        assert post(api, "/factorize", number=number, webhook="http://hooks.example/").status_code == 202
    over = post(api, "/factorize", number=1011, webhook="http://hooks.example/")
    assert over.status_code == 400 and "live webhook subscriptions per client" in over.json()["webhook"][0]
    assert post(api, "/factorize", number=1011).status_code == 202  # the submit alone is fine
    # Each new subscription costs a submit (another client here, under a roomier cap).
    settings.THROTTLE_SUBMIT, settings.WEBHOOK_MAX_PER_CLIENT = "10/minute", 100
    other = APIClient(REMOTE_ADDR="10.7.0.9")
    items = [{"number": n, "webhook": "http://hooks.example/"} for n in (2003, 2011, 2017)]
    assert other.post("/factorize/batch", {"items": items}, format="json").status_code == 200  # 3 + 3
    assert post(other, "/factorize", number=2027).status_code == 202  # 7
    assert post(other, "/factorize", number=2029, webhook="http://hooks.example/").status_code == 202  # 9
    assert post(other, "/factorize", number=2039).status_code == 202  # 10
    assert post(other, "/factorize", number=2053).status_code == 429


def test_forty_dripping_receivers_do_not_delay_another_clients_webhook(settings, raw_receivers, start_worker, healthy):
    """One client subscribes 40 dripping receivers (distinct loopback addresses); another client's
    webhook to a healthy receiver arrives while every dripping attempt still hangs."""
    for index in range(40):
        raw_receivers.append(RawReceiver(f"127.0.{1 + index // 200}.{2 + index % 200}", answer=b"HTTP/1.1 200 OK\r\n",
                                         drip=DRIP, every=2.0))  # fmt: skip
    allowed = [r.allowed() for r in raw_receivers] + [f"127.0.0.1:{healthy.port}"]
    settings.WEBHOOK_SECRET, settings.WEBHOOK_ALLOWED_HOSTS = SECRET, allowed
    env = hooks_env(*allowed, WEBHOOK_TIMEOUT="20", WEBHOOK_CONCURRENCY="8")
    attacker, victim = APIClient(REMOTE_ADDR="10.9.0.1"), APIClient(REMOTE_ADDR="10.9.0.2")
    start_worker("webhooks", **env)
    for index, dripping in enumerate(raw_receivers):
        response = post(attacker, "/sleepy", seconds=0, tag=f"a{index // 5}", webhook=dripping.url())
        assert response.status_code == 202, response.content
    start_worker("sleepy", **env)
    wait_until(lambda: sum(r.open for r in raw_receivers) >= 2, what="the dripping attempts to hang")
    time.sleep(1)  # the attacker's deliveries claim what they may
    assert sum(r.open for r in raw_receivers) <= 2  # WEBHOOK_CONCURRENCY_PER_CLIENT = 8 // 4
    job_id = post(victim, "/sleepy", seconds=0, tag="victim", webhook=healthy.url()).json()["job_id"]
    done = wait_until(lambda: victim.get(f"/jobs/{job_id}").json()["done"] and time.time(), what="the victim's job")
    wait_until(lambda: healthy.requests, timeout=20, what="the victim's webhook")
    latency = time.time() - done
    assert sum(r.open for r in raw_receivers) >= 1  # the dripping attempts still hang
    assert latency < 5, latency  # not behind a 20 s dripping attempt
    print(f"\nanother client's webhook latency beside 40 dripping receivers: {latency:.2f} s (<= arrival)")


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:a9fe:a9fe",
        "::7f00:1",  # IPv4-compatible (deprecated)
        "::ffff:0:a00:1",  # IPv4-translated (SIIT) of 10.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "2606:4700::5efe:a9fe:a9fe",  # ISATAP interface id of 169.254.169.254
        "fec0::1",  # deprecated site-local
        "fe80::1",
        "::1",
        "169.254.169.254",
        "100.64.0.1",
    ],
)
def test_embedded_and_deprecated_private_forms_are_refused(address):
    assert non_public(ipaddress.ip_address(address)), address


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::1",
                                     "::ffff:8.8.8.8"])  # fmt: skip
def test_public_addresses_and_their_embedded_forms_are_allowed(address):
    assert non_public(ipaddress.ip_address(address)) is None


def test_each_client_signs_with_its_own_receivers_secret_and_a_replay_elsewhere_fails(healthy, settings, start_worker):
    second = Receiver()
    try:
        allowed = [f"127.0.0.1:{healthy.port}", f"127.0.0.1:{second.port}"]
        settings.WEBHOOK_SECRET, settings.WEBHOOK_ALLOWED_HOSTS = SECRET, allowed
        start_worker("webhooks", **hooks_env(*allowed))
        alice, bob = APIClient(REMOTE_ADDR="10.3.0.1"), APIClient(REMOTE_ADDR="10.3.0.2")
        a = post(alice, "/factorize", number=187, webhook=healthy.url("/alice")).json()
        b = post(bob, "/factorize", number=187, webhook=second.url("/bob")).json()
        a_elsewhere = post(alice, "/factorize", number=187, webhook=second.url("/alice")).json()
        assert len({a["webhook_secret"], b["webhook_secret"], a_elsewhere["webhook_secret"], SECRET}) == 4
        assert {s["url"]: s["secret"] for s in subscriptions(alice, a["job_id"])} == {
            healthy.url("/alice"): a["webhook_secret"],
            second.url("/alice"): a_elsewhere["webhook_secret"],
        }
        start_worker("factorization")
        wait_until(lambda: healthy.bodies("/alice") and second.bodies("/bob"), what="both deliveries")
        request = healthy.requests[0]
        headers = {name.lower(): value for name, value in request["headers"].items()}
        assert Webhook(a["webhook_secret"]).verify(request["body"], headers)["event"] == "completed"
        for other in (b["webhook_secret"], a_elsewhere["webhook_secret"], SECRET):
            with pytest.raises(WebhookVerificationError):  # alice replaying it to bob's receiver fails
                Webhook(other).verify(request["body"], headers)
    finally:
        second.server.shutdown()
        second.server.server_close()


def test_progress_is_coalesced_while_one_is_pending():
    sub = {"events": ["progress"], "cursor": "0-0", "last_progress": 0, "state": "watching"}
    events = [JobEvent(f"{1000 + 600 * i}-0", "started", "", json.dumps({"message": f"{i}"})) for i in range(10)]
    _, wanted = _plan(sub, events, progress_busy=False)
    assert len(wanted) == 1  # one per round, however many came
    _, wanted = _plan(sub, events, progress_busy=True)
    assert wanted == []  # none while the previous one is pending
    assert json.dumps(_plan(sub, events, progress_busy=True)[0]["cursor"]) == '"6400-0"'  # read past them


def test_secret_derivation_is_stable_and_per_receiver(settings):
    from factorize_app.webhooks.signing import receiver_secret

    settings.WEBHOOK_SECRET = SECRET
    one = receiver_secret(owner="ip:10.0.0.1", url="https://a.example/x")
    assert one == receiver_secret(owner="ip:10.0.0.1", url="https://A.example:443/y?z")
    assert one != receiver_secret(owner="ip:10.0.0.2", url="https://a.example/x")
    assert one != receiver_secret(owner="ip:10.0.0.1", url="https://a.example:8443/x")
    assert len(base64.b64decode(one.removeprefix("whsec_"))) == 32


def test_the_dispatcher_reaches_every_watched_job_round_robin(settings, start_worker, monkeypatch):
    """Another client's finished job is reached within one pass, however many older watched jobs
    one client keeps queued (a window of 3 here stands for the 500 of a round)."""
    from factorize_app.webhooks import dispatcher as webhook_dispatcher
    from factorize_app.webhooks.worker import status_body_at

    monkeypatch.setattr(webhook_dispatcher, "WINDOW", 3)
    settings.WEBHOOK_SECRET, settings.WEBHOOK_ALLOWED_HOSTS = SECRET, ["hooks.example"]
    attacker, victim = APIClient(REMOTE_ADDR="10.5.0.1"), APIClient(REMOTE_ADDR="10.5.0.2")
    for index in range(10):  # queued for good: no sleepy worker runs
        response = post(attacker, "/sleepy", seconds=0, tag=f"q{index}", webhook="http://hooks.example/")
        assert response.status_code == 202, response.content
    start_worker("factorization")
    job_id = post(victim, "/factorize", number=221, webhook="http://hooks.example/").json()["job_id"]
    wait_until(lambda: victim.get(f"/jobs/{job_id}").json()["done"], what="the victim's job")
    dispatcher = webhook_dispatcher.Dispatcher()
    for _ in range(4):  # one pass: 11 watched jobs, 3 a round
        dispatcher.dispatch(block_ms=50, body_for=status_body_at)
    assert [d["event"] for s in subscriptions(victim, job_id) for d in s["deliveries"]] == ["completed"]


def test_no_subscription_past_the_redis_high_water_mark(tmp_path):
    """A Redis of its own, filled past the mark: a submit (the poll) of a queued input still
    answers, its webhook is a 400 naming `webhook`, a batch item with one is `invalid`."""
    import requests

    from tests.conftest import web_server
    from tests.test_full_redis import BASE_ENV, MAXMEMORY, fill
    from tests.test_redis_outage import OwnRedis

    server = OwnRedis(tmp_path, "--maxmemory", str(MAXMEMORY), "--appendonly", "no")
    server.start()
    try:
        env = {**BASE_ENV, "REDIS_MEMORY_HIGH_WATER": "0.6", "WEBHOOK_SECRET": SECRET,
               "WEBHOOK_ALLOWED_HOSTS": "hooks.example"}  # fmt: skip
        with web_server(server.url, **env) as url:
            first = requests.post(f"{url}/factorize", json={"number": 4087}, timeout=10)
            assert first.status_code == 202, first.text
            fill(server.client(), up_to=0.7)
            numbers = iter(range(10**6, 10**7))  # new inputs each time: a repeated one is a poll
            wait_until(  # the service reads Redis's memory once a second
                lambda: (
                    requests.post(f"{url}/factorize", json={"number": next(numbers)}, timeout=10).status_code == 503
                ),
                what="new jobs refused past the mark",
            )
            hooked = {"number": 4087, "webhook": "http://hooks.example/"}
            refused = requests.post(f"{url}/factorize", json=hooked, timeout=10)
            assert refused.status_code == 400 and "high-water" in refused.json()["webhook"][0], refused.text
            batch = requests.post(f"{url}/factorize/batch", json={"items": [hooked]}, timeout=10).json()
            assert batch["results"][0]["status"] == "invalid" and "webhook" in batch["results"][0]["errors"]
            assert requests.post(f"{url}/factorize", json={"number": 4087}, timeout=10).status_code == 202
            assert not server.client().keys("factorize:webhooks:subscriptions:*")
    finally:
        server.stop()
