"""`GET /jobs/<id>` with `Accept: text/event-stream`: server-sent events pushed by real workers
through the real server (granian, scripts/serve.sh): progress, the end, Last-Event-ID, keep-alive
comments, a queued job kept alive, and hundreds of streams open beside ordinary polls."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import wait_until, web_server

STREAM = {"Accept": "text/event-stream"}


def read_events(response: requests.Response, limit: int | None = None) -> Iterator[dict]:
    """Server-sent events as dicts ({"id", "event", "data"}; comments as {"comment"}), until the
    server closes the stream or `limit` events (not comments) were read."""
    event: dict = {}
    count = 0
    for raw in response.iter_lines(decode_unicode=True):
        if raw is None:
            continue
        line = raw
        if line == "":
            if event:
                yield event
                if "comment" not in event:
                    count += 1
                    if limit is not None and count >= limit:
                        return
            event = {}
        elif line.startswith(":"):
            event = {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            event[name] = json.loads(value) if name == "data" else value


def open_stream(url: str, job_id: str, **headers: str) -> requests.Response:
    return requests.get(f"{url}/jobs/{job_id}", headers={**STREAM, **headers}, stream=True, timeout=(10, 60))


def id_key(event_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = event_id.partition("-")
    return int(milliseconds), int(sequence)


def test_a_hard_semiprimes_stream_shows_started_progress_and_the_end(live_url, start_worker, redis_conn):
    """A continuous reader and one that leaves and comes back with Last-Event-ID see the same
    events (ids strictly increasing, none missing), and both streams close after the done event."""
    from sympy import nextprime

    hard = nextprime(10**19) * nextprime(3 * 10**20)  # a 41-digit semiprime: seconds of ECM
    job_id = requests.post(f"{live_url}/factorize", json={"number": str(hard)}, timeout=10).json()["job_id"]
    continuous: list[dict] = []
    reader = threading.Thread(
        target=lambda: continuous.extend(e for e in read_events(open_stream(live_url, job_id)) if "data" in e)
    )
    reader.start()
    start_worker("factorization")

    response = open_stream(live_url, job_id)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    before = list(read_events(response, limit=3))
    response.close()  # the client leaves mid-job...
    last_id = before[-1]["id"]
    wait_until(  # ...misses a few progress events...
        lambda: len(redis_conn.xrange(f"factorize:events:{job_id}", min=f"({last_id}")) >= 2,
        timeout=60,
        what="events the client misses",
    )
    resumed = open_stream(live_url, job_id, **{"Last-Event-ID": last_id})
    after = [event for event in read_events(resumed) if "data" in event]  # ...and reads to the end

    reader.join(120)
    assert not reader.is_alive(), "the continuous stream did not close after the done event"
    assert continuous[-1]["data"]["status"] == after[-1]["data"]["status"] == "finished"
    assert continuous[-1]["data"]["factorization"] == after[-1]["data"]["factorization"]
    assert continuous[-1]["data"]["done"] is True
    bodies = [event["data"] for event in continuous if event["event"] == "status"]  # (not its `output` events)
    statuses = [body["status"] for body in bodies]
    assert statuses[0] == "queued" and "started" in statuses
    progress = [body["progress"] for body in bodies if body["progress"]]
    assert any(p["message"].startswith("ECM, curve ") and p["fraction"] is not None for p in progress)
    # Nothing lost across the reconnect: the events after last_id are exactly those the
    # continuous reader saw after it, in the same order, with the same bodies (but the load).
    after_ids = [event["id"] for event in after]
    later = [event for event in continuous if "id" in event and id_key(event["id"]) > id_key(last_id)]
    assert after_ids == [event["id"] for event in later]
    assert len(after_ids) >= 2
    strip = lambda event: {k: v for k, v in event["data"].items() if k != "load"}  # noqa: E731
    assert [strip(event) for event in after] == [strip(event) for event in later]
    assert all(id_key(a) < id_key(b) for a, b in zip(after_ids, after_ids[1:], strict=False))
    # ...and those ids are the job's Redis stream entries.
    entries = [entry_id.decode() for entry_id, _ in redis_conn.xrange(f"factorize:events:{job_id}")]
    assert set(after_ids) <= set(entries)
    # A reconnect after the end is told to stop (204: EventSource does not reconnect).
    assert open_stream(live_url, job_id, **{"Last-Event-ID": after_ids[-1]}).status_code == 204
    # A fresh stream of a done job: its one done event, then the end.
    (only,) = [event for event in read_events(open_stream(live_url, job_id)) if "data" in event]
    assert only["data"]["status"] == "finished" and only["id"] == after_ids[-1]


@pytest.mark.parametrize("lane", ["lean", "django"])
def test_a_submit_asking_for_the_stream_streams_its_job_to_the_end(live_url, start_worker, lane):
    """`POST /factorize` with `Accept: text/event-stream` submits and streams the job in one
    request, on the lean lane and on Django's (a Cancel-After sends it there): its events to the
    done one, the same job as the JSON submit's; a webhook with it is a 400 naming the field."""
    headers = {**STREAM, **({"Cancel-After": "600"} if lane == "django" else {})}
    number = str((2**61 - 1) * (7 if lane == "lean" else 11))
    response = requests.post(
        f"{live_url}/factorize", json={"number": number}, headers=headers, stream=True, timeout=(10, 60)
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    start_worker("factorization")
    events = [event for event in read_events(response) if "data" in event]
    assert events[-1]["data"]["status"] == "finished" and events[-1]["data"]["done"] is True
    assert events[-1]["data"]["factorization"] == ([[7, 1]] if lane == "lean" else [[11, 1]]) + [[2**61 - 1, 1]]
    ids = [id_key(event["id"]) for event in events if "id" in event]  # (a new job's first state has none yet)
    assert ids and ids == sorted(set(ids))
    polled = requests.post(f"{live_url}/factorize", json={"number": number}, timeout=10).json()
    assert polled["job_id"] == events[-1]["data"]["job_id"] and polled["done"] is True

    hooked = requests.post(
        f"{live_url}/factorize",
        json={"number": "15", "webhook": {"url": "https://example.com/hook"}},
        headers=headers,
        timeout=10,
    )
    assert hooked.status_code == 400 and hooked.headers["Content-Type"] == "application/json"
    assert "webhook" in hooked.json()


def test_the_browsable_page_shows_the_progress_of_a_running_job(live_url, start_worker):
    from sympy import nextprime

    hard = nextprime(10**19) * nextprime(5 * 10**20)
    job_id = requests.post(f"{live_url}/factorize", json={"number": str(hard)}, timeout=10).json()["job_id"]
    start_worker("factorization")
    response = open_stream(live_url, job_id)
    next(e for e in read_events(response) if "data" in e and (e["data"]["progress"] or {}).get("fraction"))
    response.close()
    page = requests.get(f"{live_url}/jobs/{job_id}", headers={"Accept": "text/html"}, timeout=10)
    assert page.status_code == 202 and page.headers["Content-Type"].startswith("text/html")
    assert "&quot;progress&quot;" in page.text and "&quot;fraction&quot;" in page.text


def test_an_unknown_job_is_the_usual_404_json(live_url):
    response = open_stream(live_url, "sleepy-" + "0" * 32)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"detail": "No job with this id."}


@pytest.fixture(scope="module")
def short_lived_server(redis_conn):
    """Keep-alive comments every 0.3 s, queued jobs expiring after 2 s unpolled, 3 streams at most."""
    with web_server(EVENT_STREAM_KEEPALIVE="0.3", JOB_TTL="2", EVENT_STREAMS_MAX="3") as url:
        yield url


def test_keep_alive_comments_and_a_queued_job_kept_alive(short_lived_server, redis_conn):
    url = short_lived_server
    job_id = requests.post(f"{url}/sleepy", json={"seconds": 0, "tag": "kept"}, timeout=10).json()["job_id"]
    response = open_stream(url, job_id)
    started = time.monotonic()
    events = []
    for event in read_events(response):
        events.append(event)
        if time.monotonic() - started > 5:  # over twice JOB_TTL: unpolled, the job would be gone
            break
    response.close()
    comments = [event for event in events if event.get("comment") == "keep-alive"]
    assert len(comments) >= 5
    assert events[0]["data"]["status"] == "queued"
    assert redis_conn.ttl(f"rq:job:{job_id}") > 0
    assert requests.get(f"{url}/jobs/{job_id}", timeout=10).json()["status"] == "queued"
    # Without the stream nobody polls it: it expires as any queued job does (watched in Redis: a
    # poll would keep it alive).
    wait_until(lambda: not redis_conn.exists(f"rq:job:{job_id}"), timeout=10, what="the job to expire")
    assert requests.get(f"{url}/jobs/{job_id}", timeout=10).status_code == 404


def test_streams_beyond_the_limit_are_refused_and_a_closed_one_frees_its_place(short_lived_server):
    url = short_lived_server
    ids = [
        requests.post(f"{url}/sleepy", json={"seconds": 0, "tag": f"slot{i}"}, timeout=10).json()["job_id"]
        for i in range(4)
    ]
    streams = [open_stream(url, job_id) for job_id in ids[:3]]
    assert [s.status_code for s in streams] == [200] * 3
    refused = open_stream(url, ids[3])
    assert refused.status_code == 503 and "event streams" in refused.json()["detail"]
    assert requests.get(f"{url}/jobs/{ids[3]}", timeout=10).status_code == 202  # polls still answer
    for s in streams:
        s.close()
    # The server notices the clients left at its next keep-alive comment and frees their places.

    def opens() -> bool:
        with open_stream(url, ids[3]) as response:
            return response.status_code == 200

    wait_until(opens, timeout=10, what="a freed stream place")


def test_hundreds_of_open_streams_while_polls_and_healthz_answer(start_worker, redis_conn):
    """One server process holds hundreds of streams (one dispatcher, one blocking Redis
    connection); a poll and /healthz answer beside them; a worker's results reach every one."""
    count = 300
    with web_server(WEB_THREADS="400", MAX_HELD_PER_CLIENT="1000") as url:  # one client (127.0.0.1), many streams
        items = [{"seconds": 0, "tag": f"many{i}"} for i in range(count)]
        results = requests.post(f"{url}/sleepy/batch", json={"items": items}, timeout=30).json()["results"]
        ids = [result["job_id"] for result in results]
        host, port = url.removeprefix("http://").split(":")
        db = str(redis_conn.connection_pool.connection_kwargs.get("db", 0))
        blocked_reads = lambda: sum(  # noqa: E731
            1 for c in redis_conn.client_list() if c.get("cmd") == "xread" and c.get("db") == db
        )
        blocked_before = blocked_reads()
        sockets = []
        for job_id in ids:
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(f"GET /jobs/{job_id} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
            sockets.append(sock)
        received = {sock: b"" for sock in sockets}

        def read_available(timeout: float) -> None:
            readable, _, _ = select.select(sockets, [], [], timeout)
            for sock in readable:
                received[sock] += sock.recv(65536)

        wait_until(
            lambda: read_available(0.2) or all(b"event: status" in data for data in received.values()),
            timeout=60,
            what="every stream's first event",
        )
        assert all(data.startswith(b"HTTP/1.1 200") for data in received.values())
        assert all(b'"status":"queued"' in data for data in received.values())
        assert blocked_reads() <= blocked_before + 1  # one dispatcher's blocking read serves them all

        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        assert requests.get(f"{url}/jobs/{ids[0]}", timeout=10).json()["status"] == "queued"

        start_worker("sleepy")
        wait_until(
            lambda: read_available(0.2) or all(b'"status":"finished"' in data for data in received.values()),
            timeout=90,
            what="every stream's done event",
        )
        for sock in sockets:
            sock.close()


def test_a_streams_first_look_opens_the_jobs_events_and_answers_the_newest_id_with_its_state(redis_conn):
    """jobs.open_status, in one poll: the job's stream is opened before its state is read (so the
    change after the look is appended), and the id answered is the stream's newest entry then."""
    from factorize_app import jobs
    from factorize_app.jobs import keys
    from factorize_app.jobs.events import running_ttl
    from factorize_app.tasks import get_task_type

    job_id = jobs.submit(task_type=get_task_type("factorization"), data={"number": 10**12 + 39}, client="me").job_id
    events = keys.events(job_id)
    assert not redis_conn.exists(events), "nobody has read its events yet"
    state, newest = jobs.open_status(job_id=job_id)
    assert (state.status, newest) == ("queued", None) and redis_conn.xlen(events) == 0
    assert redis_conn.ttl(events) >= running_ttl(get_task_type("factorization")) - 5, "opened for its run"
    jobs.cancel(job_id=job_id, client="me")  # a change after the first look: appended
    (appended, fields), *_ = redis_conn.xrevrange(events, count=1)
    assert fields[b"status"] == b"canceled"
    state, newest = jobs.open_status(job_id=job_id)
    assert (state.status, newest) == ("canceled", appended.decode())
    with pytest.raises(jobs.JobNotFound):
        jobs.open_status(job_id=job_id, owner="someone else")
