"""A task type on a Redis of its own (TASK_REDIS_URLS): two real Redis servers, the real web server
and real workers. `sleepy` lives on the test's own redis-server, every other type on the test
database (the home Redis, which keeps clients, files, webhooks and the job id key)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from rq.registry import FinishedJobRegistry, StartedJobRegistry
from rq.worker import Worker

from factorize_app.jobs import keys
from factorize_app.webhooks import keys as webhook_keys
from tests.conftest import ROOT, free_port, poll_until_done, wait_until, web_server
from tests.processes import rqworker
from tests.support import service_env
from tests.test_event_stream import open_stream, read_events
from tests.test_redis_outage import OwnRedis
from tests.test_webhooks import Receiver
from tests.test_webhooks import worker_env as webhook_env

AWAY = "sleepy"  # the type on the second Redis
PROXY = {"CLIENT_IP_HEADER": "X-Real-IP", "TRUSTED_PROXIES": "127.0.0.0/8"}  # a client per address


@pytest.fixture
def away_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def _setting(away: OwnRedis) -> dict[str, str]:
    return {"TASK_REDIS_URLS": f"{AWAY}={away.url}"}


def _start_away_worker(start_worker, away: OwnRedis, **env: str):
    """A `sleepy` worker: it registers on the second Redis, not on the home one."""
    worker = start_worker(AWAY, wait=False, **_setting(away), **env)
    wait_until(
        lambda: (
            any(w.pid == worker.process.pid for w in Worker.all(connection=away.client()))
            or worker.process.poll() is not None
        ),
        timeout=60,
        what="the sleepy worker to register on its own Redis",
    )
    assert worker.process.poll() is None, worker.log
    return worker


def _post(url: str, path: str, body: dict, client: str = "10.0.0.1", **headers: str) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, headers={"X-Real-IP": client, **headers}, timeout=30)


def _get(url: str, path: str, client: str = "10.0.0.1", **headers: str) -> requests.Response:
    return requests.get(f"{url}{path}", headers={"X-Real-IP": client, **headers}, timeout=60)


def _keys(conn: redis.Redis, pattern: str) -> list[str]:
    return [key.decode() for key in conn.scan_iter(match=pattern, count=1000)]


def test_jobs_of_a_type_on_its_own_redis_live_there_and_answer_every_way(
    away_redis, start_worker, redis_conn
):  # fmt: skip
    """Submit, the hot poll, Prefer: wait, the event stream, cancel and the result for a job on the
    second Redis; each type's keys only on its own server; /queues reads each from its own."""
    away = away_redis.client()
    _start_away_worker(start_worker, away_redis)
    start_worker("factorization", **_setting(away_redis))
    with web_server(**_setting(away_redis), **PROXY) as url:
        sleepy = _post(url, "/sleepy", {"seconds": 0.05, "tag": "one"})
        assert sleepy.status_code == 202, sleepy.text
        sleepy_id = sleepy.json()["job_id"]
        done = poll_until_done(lambda: _get(url, f"/jobs/{sleepy_id}"))  # the lean lane's poll
        assert done["status"] == "finished" and done["slept"] == 0.05
        factored = poll_until_done(lambda: _post(url, "/factorize", {"number": 1001}))
        assert factored["status"] == "finished"
        factor_id = factored["job_id"]

        # Each type's job keys on its own server, none on the other; the job id key at home.
        assert away.exists(f"rq:job:{sleepy_id}") and not redis_conn.exists(f"rq:job:{sleepy_id}")
        assert redis_conn.exists(f"rq:job:{factor_id}") and not away.exists(f"rq:job:{factor_id}")
        assert not _keys(redis_conn, f"*{AWAY}*"), _keys(redis_conn, f"*{AWAY}*")
        assert not _keys(away, "*factorization*"), _keys(away, "*factorization*")
        assert redis_conn.exists(keys.JOB_ID_KEY) and not away.exists(keys.JOB_ID_KEY)

        # Prefer: wait holds on the second Redis's result stream.
        waited_id = _post(url, "/sleepy", {"seconds": 0.5, "tag": "wait"}).json()["job_id"]
        waited = _get(url, f"/jobs/{waited_id}", Prefer="wait=20")
        assert waited.status_code == 200 and waited.json()["slept"] == 0.5, waited.text

        # The event stream: its dispatcher reads the second Redis.
        streamed_id = _post(url, "/sleepy", {"seconds": 0.5, "tag": "stream"}).json()["job_id"]
        with open_stream(url, streamed_id, **{"X-Real-IP": "10.0.0.1"}) as response:
            assert response.status_code == 200
            statuses = [event["data"]["status"] for event in read_events(response) if "data" in event]
        assert statuses[-1] == "finished", statuses

        # Cancel a running job there (sleepy's job_timeout is 3 s).
        long_id = _post(url, "/sleepy", {"seconds": 2.9, "tag": "long"}).json()["job_id"]
        wait_until(lambda: _get(url, f"/jobs/{long_id}").json()["status"] == "started", what="the long job to start")
        canceled = requests.delete(f"{url}/jobs/{long_id}", headers={"X-Real-IP": "10.0.0.1"}, timeout=30)
        assert canceled.status_code in (200, 202), canceled.text
        ended = poll_until_done(lambda: _get(url, f"/jobs/{long_id}"))
        assert ended["status"] == "canceled", ended

        queues = {queue["name"]: queue for queue in _get(url, "/queues").json()}
        assert queues[AWAY]["workers"] == 1 and queues[AWAY]["finished"] == 3, queues[AWAY]
        assert queues["factorization"]["workers"] == 1 and queues["factorization"]["finished"] == 1


def test_fair_order_holds_on_the_second_redis(away_redis, start_worker):
    """Client B's one job is not kept waiting behind client A's 30 queued before it: the second
    Redis's take script serves the clients in turn (a worker taking one job per round trip)."""
    away = away_redis.client()
    with web_server(**_setting(away_redis), **PROXY) as url:
        batch = [{"seconds": 0.02, "tag": f"a{i}"} for i in range(30)]
        assert _post(url, "/sleepy/batch", {"items": batch}, client="10.0.0.1").status_code == 200
        assert _post(url, "/sleepy", {"seconds": 0.02, "tag": "b0"}, client="10.0.0.2").status_code == 202
        assert away.llen(f"rq:queue:{AWAY}") == 31
        _start_away_worker(start_worker, away_redis, WORKER_BATCH_SIZE="1")
        b0 = poll_until_done(lambda: _post(url, "/sleepy", {"seconds": 0.02, "tag": "b0"}, client="10.0.0.2"))
        # Scored by expiry, the same TTL after each end: in the order they finished.
        finished = [raw.decode() for raw in away.zrange(FinishedJobRegistry(AWAY, connection=away).key, 0, -1)]
        a_done = finished.index(b0["job_id"])
        assert a_done <= 2, f"client B's job waited for {a_done} of client A's"


def test_a_running_cap_holds_on_the_second_redis(away_redis, start_worker):
    """With MAX_RUNNING_PER_CLIENT=1, two idle workers run one client's three jobs one at a time."""
    cap = {"MAX_RUNNING_PER_CLIENT": "1"}
    started = StartedJobRegistry(AWAY, connection=away_redis.client())
    with web_server(**_setting(away_redis), **PROXY, **cap) as url:
        _start_away_worker(start_worker, away_redis, **cap)
        _start_away_worker(start_worker, away_redis, **cap)
        ids = [_post(url, "/sleepy", {"seconds": 0.6, "tag": f"c{i}"}).json()["job_id"] for i in range(3)]
        most = 0

        def all_done() -> bool:
            nonlocal most
            most = max(most, started.count)
            return all(_get(url, f"/jobs/{job_id}").json()["done"] for job_id in ids)

        wait_until(all_done, timeout=30, interval=0.02, what="the capped jobs to finish")
        assert most == 1


def test_the_request_rate_is_one_limit_per_client_across_both_servers(away_redis, redis_conn):
    """Polls of a job on either server count against one allowance, kept on the home Redis."""
    with web_server(**_setting(away_redis), **PROXY, THROTTLE_POLL="6/minute") as url:
        sleepy_id = _post(url, "/sleepy", {"seconds": 1, "tag": "rate"}).json()["job_id"]
        factor_id = _post(url, "/factorize", {"number": 1003}).json()["job_id"]
        answers = [_get(url, f"/jobs/{job_id}").status_code for job_id in [sleepy_id, factor_id] * 4]
        assert answers[:6] == [202] * 6 and answers[6:] == [429, 429], answers
        assert _get(url, f"/jobs/{sleepy_id}", client="10.0.0.9").status_code == 202  # another client
        assert _keys(redis_conn, "factorize:throttle:*") and not _keys(away_redis.client(), "factorize:throttle:*")


def test_an_outage_of_the_second_redis_is_a_503_naming_it_while_other_types_answer(away_redis):
    """Its type's requests answer 503 JSON naming the setting and the type; the other types' are
    answered; /readyz stays 200, degraded, naming the type; /metrics leaves its series out."""
    with web_server(**_setting(away_redis), **PROXY, REDIS_SOCKET_TIMEOUT="1") as url:
        sleepy_id = _post(url, "/sleepy", {"seconds": 1, "tag": "before"}).json()["job_id"]
        away_redis.stop()
        for response in (
            _post(url, "/sleepy", {"seconds": 1, "tag": "during"}),
            _get(url, f"/jobs/{sleepy_id}"),
            _get(url, f"/jobs/{sleepy_id}", Prefer="wait=2"),
        ):
            assert response.status_code == 503, response.text
            assert response.headers["Content-Type"] == "application/json"
            body = response.json()
            assert body["task_types"] == [AWAY] and body["redis"] == "TASK_REDIS_URLS", body
            assert AWAY in body["detail"] and int(response.headers["Retry-After"]) > 0
        factored = _post(url, "/factorize", {"number": 1005})
        assert factored.status_code == 202, factored.text
        assert _get(url, f"/jobs/{factored.json()['job_id']}").status_code == 202
        metrics = _get(url, "/metrics").text
        assert f'factorize_queue_redis_up{{queue="{AWAY}"}} 0.0' in metrics, metrics[:2000]
        assert 'factorize_queue_redis_up{queue="factorization"} 1.0' in metrics and "factorize_redis_up 1.0" in metrics
        assert f'factorize_queue_workers{{queue="{AWAY}"}}' not in metrics
        ready = _get(url, "/readyz")  # still in rotation: the other types answer
        assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
        assert list(ready.json()["unavailable"]) == [AWAY], ready.text


def test_a_worker_asked_for_queues_on_two_servers_refuses(tmp_path):
    log = tmp_path / "worker.log"
    env = service_env(TASK_REDIS_URLS=f"{AWAY}=redis://127.0.0.1:{free_port()}/0")
    process = rqworker(env, AWAY, "factorization", log=log)
    assert process.wait(60) != 0
    text = log.read_text()
    assert "TASK_REDIS_URLS" in text and "one Redis" in text, text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("nosuchtype=redis://127.0.0.1:6390/0", "TASK_REDIS_URLS names no task type 'nosuchtype'"),
        ("sleepy=http://user:s3cret@host/0", "TASK_REDIS_URLS must give 'sleepy' a redis://"),
        ("sleepy", "TASK_REDIS_URLS must be a comma-separated list of type=redis://"),
        ("sleepy=redis://a:1/0,sleepy=redis://b:2/0", "TASK_REDIS_URLS names the task type 'sleepy' twice"),
    ],
)
def test_a_bad_task_redis_urls_is_refused_at_start_naming_the_setting(value, expected):
    answer = _django_setup(TASK_REDIS_URLS=value)
    assert answer.returncode != 0 and expected in answer.stderr, answer.stderr[-2000:]
    assert "s3cret" not in answer.stderr


def test_task_redis_urls_with_sentinels_is_refused():
    answer = _django_setup(TASK_REDIS_URLS="sleepy=redis://127.0.0.1:6390/0", TEST_REDIS_SENTINELS="127.0.0.1:26379")
    assert answer.returncode != 0 and "cannot be combined with REDIS_SENTINELS" in answer.stderr


def test_django_rq_gets_each_queue_its_own_redis():
    """django-rq's dashboard and RQ's CLI read each queue's own connection (RQ_QUEUES)."""
    answer = _django_setup(
        TASK_REDIS_URLS="sleepy=redis://10.0.0.5:6390/3",
        code="from django.conf import settings as s; print(s.RQ_QUEUES['sleepy']['URL']);"
        "print(s.RQ_QUEUES['factorization']['URL'])",
    )
    sleepy_url, home_url = answer.stdout.split()
    assert sleepy_url.startswith("redis://10.0.0.5:6390/3?") and home_url.startswith(os.environ["TEST_REDIS_URL"])


def _django_setup(code: str = "", **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        env=service_env(**env),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_a_webhook_of_a_job_on_the_second_redis_is_delivered(away_redis, start_worker, redis_conn):
    """The subscription and its delivery live on the home Redis; the dispatcher reads the job's
    events on the second one."""
    receiver = Receiver()
    try:
        env = {**_setting(away_redis), **webhook_env(receiver)}
        start_worker("webhooks", **env)
        _start_away_worker(start_worker, away_redis)
        with web_server(**env, **PROXY) as url:
            job_id = _post(url, "/sleepy", {"seconds": 0.2, "tag": "hook", "webhook": receiver.url()}).json()["job_id"]
            wait_until(lambda: receiver.bodies(), what="the webhook")
        (body,) = receiver.bodies()
        assert (body["event"], body["job_id"], body["slept"]) == ("completed", job_id, 0.2)
        assert redis_conn.exists(webhook_keys.subscriptions(job_id))
        assert not away_redis.client().exists(webhook_keys.subscriptions(job_id))
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
