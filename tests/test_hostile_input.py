"""Hostile input, thrown as an attacker would at every endpoint of every task type, through the lean
lane and through Django and DRF: every answer is a JSON 4xx (or the ordinary answer), never a 5xx;
a web process's memory stays bounded under a stream of distinct padded bodies; a forged Host is
refused on both lanes; the API is no password-guessing endpoint; a bad batch item fails alone.
Webhook fields: test_hostile_webhook_fields.py; keys, logins and held requests: test_hostile_identity.py.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from factorize_app.tasks import task_types
from tests.conftest import poll_until_done, process_tree, server_pid, web_server
from tests.hostile import LANES, assert_json_answer, send

TASK_TYPES = task_types()
DEEP = 10_000

# Values no input field of any type accepts, or accepts only as the ordinary input: each is a class.
HOSTILE_VALUES = [
    None,
    True,
    1.5,
    -1,
    [],
    {},
    "",
    " 12",
    "12 ",
    "+12",
    "-5",
    "1e5",
    "0x1f",
    "١٢",  # Arabic-Indic digits: int() would take them
    "１２",  # fullwidth digits
    "9" * 5000,  # past int()'s 4,300-digit limit
    "0" * 5000 + "7",
    "9" * 200,
    "\u0000",
    "\ud83d\ude00" * 100,
    "x" * 70_000,
    [[[[[[[[1]]]]]]]],
]
# Bodies as raw bytes, for what JSON encoders will not produce.
RAW_BODIES = [
    b"[" * DEEP + b"]" * DEEP,
    b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    b"{",
    b"",
    b"null",
    b"[]",
    b'"string"',
    b"\xff\xfe\xfa",
    b'{"number": NaN}',
    b'{"number": Infinity}',
    b'{"number": -Infinity}',
    b'{"number": 1' + b"0" * 5000 + b"}",
    b'{"n": 1' + b"0" * 5000 + b"}",
    b'{"items": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    b'{"numbers": [' + b"[" * DEEP + b"]" * DEEP + b"]}",
    b'{"number": "\\ud800"}',
]


def field_cases(task_type) -> Iterator[dict]:
    for field in task_type.input_fields:
        for value in HOSTILE_VALUES:
            yield {field: value}
    yield {"unknown": 1}
    yield {field: value for field, value in zip(task_type.input_fields, HOSTILE_VALUES, strict=False)}


@pytest.mark.parametrize("lane", LANES)
@pytest.mark.parametrize("task_type", TASK_TYPES, ids=lambda task_type: task_type.name)
def test_hostile_fields_get_json_4xx_naming_the_field(live_url, session, lane, task_type):
    for body in field_cases(task_type):
        response = send(session, "POST", f"{live_url}/{task_type.path}", lane, json=body)
        what = f"POST /{task_type.path} {json.dumps(body)[:80]}"
        assert_json_answer(response, what)
        if response.status_code == 400:
            named = set(response.json())
            assert named & {*task_type.input_fields, "non_field_errors"}, (what, response.json())


@pytest.mark.parametrize("lane", LANES)
@pytest.mark.parametrize("task_type", TASK_TYPES, ids=lambda task_type: task_type.name)
def test_hostile_bodies_never_get_a_5xx(live_url, session, lane, task_type):
    for path in (f"/{task_type.path}", f"/{task_type.path}/batch"):
        for body in RAW_BODIES:
            for content_type in ("application/json", "application/x-www-form-urlencoded", "text/plain"):
                response = send(
                    session, "POST", live_url + path, lane, data=body, headers={"Content-Type": content_type}
                )
                assert_json_answer(response, f"POST {path} {content_type} {body[:40]!r}")


@pytest.mark.parametrize("lane", LANES)
@pytest.mark.parametrize("task_type", TASK_TYPES, ids=lambda task_type: task_type.name)
def test_each_bad_batch_item_fails_alone(live_url, session, lane, task_type, redis_conn):
    good = _valid_input(task_type)
    items = [good, *(body for body in field_cases(task_type)), None, "abc", 12, [], [good]]
    response = send(session, "POST", f"{live_url}/{task_type.path}/batch", lane, json={"items": items})
    assert response.status_code == 200, response.text[:300]
    results = response.json()["results"]
    assert len(results) == len(items)
    assert results[0]["status"] in ("queued", "started", "finished", "failed")
    for item, result in zip(items[1:], results[1:], strict=True):
        if result["status"] == "invalid":
            assert result["errors"], item
    assert [result["status"] for result in results[-5:]] == ["invalid"] * 5
    if len(task_type.input_fields) == 1:  # the plural shorthand: {"numbers": [12, "abc", null]}
        field = task_type.input_fields[0]
        bad = [None, {}, [], *(["abc", "9" * 5000] if isinstance(good[field], int) else [])]
        plural = {f"{field}s": [good[field], *bad]}
        response = send(session, "POST", f"{live_url}/{task_type.path}/batch", lane, json=plural)
        assert response.status_code == 200, response.text[:300]
        statuses = [result["status"] for result in response.json()["results"]]
        assert statuses[0] != "invalid" and statuses[1:] == ["invalid"] * len(bad)


@pytest.mark.parametrize("lane", LANES)
def test_hostile_job_ids_and_prefer_headers(live_url, session, lane, warm_worker):
    """On a finished job, so that a wait capped at MAX_WAIT answers at once."""
    warm_worker("factorization")
    finished = poll_until_done(lambda: send(session, "POST", f"{live_url}/factorize", lane, json={"number": 4242}))
    job_id = finished["job_id"]
    arabic_one = "wait=\u0661".encode().decode("latin-1")  # its UTF-8 bytes, as a header carries them
    prefers = [
        "wait=" + "9" * 5000,
        "wait=" + "0" * 5000 + "1",
        "wait=-1",
        "wait=1e9",
        arabic_one,
        "wait=²",
        "wait",
        "=,",
    ]
    ids = [job_id, "x" * 10_000, "../../etc/passwd", "factorization-" + "0" * 32, "%00", "a" * 300 + "-" + "0" * 32]
    for prefer in prefers:
        for path in (f"/jobs/{job_id}", "/queues"):
            response = send(session, "GET", live_url + path, lane, headers={"Prefer": prefer})
            assert_json_answer(response, f"GET {path} Prefer: {prefer[:20]}")
        response = send(
            session, "POST", f"{live_url}/factorize", lane, json={"number": 4242}, headers={"Prefer": prefer}
        )
        assert_json_answer(response, f"POST /factorize Prefer: {prefer[:20]}")
        assert response.status_code in (200, 202)
    for hostile in ids:
        for method in ("GET", "DELETE"):
            response = send(session, method, f"{live_url}/jobs/{hostile}", lane)
            assert_json_answer(response, f"{method} /jobs/{hostile[:40]}")


OTHER_PATHS = ["/", "/healthz", "/readyz/", "/metrics", "/queues", "/api/schema/", "/jobs/", "/nowhere", "/factorize/x"]


@pytest.mark.parametrize("lane", LANES)
def test_every_other_endpoint_and_method(live_url, session, lane):
    paths = [*OTHER_PATHS, *(f"/{task_type.path}" for task_type in TASK_TYPES)]
    for path in paths:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "BREW"):
            for body in (b"", RAW_BODIES[0], b'{"number": 1' + b"0" * 5000 + b"}"):
                response = send(
                    session, method, live_url + path, lane, data=body, headers={"Content-Type": "application/json"}
                )
                assert_json_answer(response, f"{method} {path} {body[:20]!r}")


def raw_request(url: str, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
    """One request written by hand, for headers no HTTP client sends (a 5,000-digit Content-Length)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head + b"\r\n\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, answer


@pytest.mark.parametrize("cookie", [b"", b"Cookie: lane=off\r\n"])
def test_hostile_content_lengths(live_url, cookie):
    for length in (b"9" * 5000, b"-1", b"1e3", b"0x10", b"18446744073709551617"):
        head = b"POST /factorize HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" + cookie
        head += b"Connection: close\r\nContent-Length: " + length
        status, answer = raw_request(live_url, head, b'{"number": 12}')
        assert status < 500, (length[:20], answer[:300])  # 0: the server refused to parse it (closed)


@pytest.mark.parametrize("lane", LANES)
def test_a_forged_host_is_refused_on_both_lanes(live_url, session, lane, redis_conn):
    before = len(redis_conn.keys("rq:job:*"))
    for host in ("evil.example", "localhost.evil.example", "127.0.0.1@evil.example", "[::1", "a" * 300):
        for method, path, body in (
            ("POST", "/factorize", {"number": 808_017_424_794_512_875_886_459_904_961_710_757_005_754_368_000_000}),
            ("POST", "/factorize/batch", {"numbers": [77_777]}),
            ("GET", "/jobs/factorization-" + "0" * 32, None),
            ("GET", "/queues", None),
        ):
            response = send(session, method, live_url + path, lane, json=body, headers={"Host": host})
            assert response.status_code == 400, (host, method, path, response.status_code)
            assert response.json() == {"detail": "Bad request."}
    assert len(redis_conn.keys("rq:job:*")) == before  # nothing was queued for a forged host


@pytest.mark.parametrize("lane", LANES)
def test_the_api_is_no_login_endpoint(live_url, session, lane):
    """Credentials sent to the API are ignored: it authenticates nobody, so it answers no
    "invalid username/password", and a staff session cookie does not turn JSON posts into CSRF 403s."""
    for auth in (("admin", "wrong"), ("admin", "admin")):
        response = send(session, "POST", f"{live_url}/factorize", lane, json={"number": 8}, auth=auth)
        assert response.status_code in (200, 202), response.text[:200]
    cookies = {"sessionid": "forged", "csrftoken": "x"}
    response = requests.post(f"{live_url}/factorize", json={"number": 8}, cookies=cookies, timeout=10)
    assert response.status_code in (200, 202), response.text[:200]


def test_lean_lane_errors_are_counted(live_url, session):
    send(session, "POST", f"{live_url}/primes", "lean", json={"n": "9" * 5000})
    metrics = requests.get(f"{live_url}/metrics", timeout=10).text
    assert 'factorize_http_requests_total{method="POST",route="primes-list",status="400"}' in metrics
    send(session, "BREW", f"{live_url}/primes", "lean")
    assert "BREW" not in requests.get(f"{live_url}/metrics", timeout=10).text  # methods are bounded labels


def _valid_input(task_type) -> dict:
    """A model's first declared example; the test-only types (tests/task_types.py) declare none."""
    if task_type.examples:
        return dict(task_type.examples[0])
    examples = {"tag": "hostile", "seconds": 0, "x": 3}
    return {field: examples[field] for field in task_type.input_fields}


# --- Memory: a stream of distinct padded bodies -------------------------------------------------


def resident_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants (the server's worker processes)."""
    total = 0
    for current in process_tree(pid):
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except FileNotFoundError:
            continue
        total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    return total


def test_memory_stays_bounded_under_distinct_padded_bodies():
    """Before the cache was bounded by bytes, 10,000 distinct 60 KB bodies could sit in it: 600 MB.
    3,000 of them (180 MB sent) now leave the process within a few MB of where it started."""
    with web_server() as url, requests.Session() as http:
        pid = server_pid(url)
        pad = "p" * 60_000

        def padded(index: int) -> int:
            body = {"number": 408216, "pad": f"{index}-{pad}"}
            return http.post(f"{url}/factorize", json=body, timeout=30).status_code

        assert {padded(index) for index in range(300)} <= {200, 202}  # warm: code paths, pools, arenas
        before = resident_kib(pid)
        started = time.monotonic()
        statuses = {padded(index) for index in range(300, 3300)}
        grown_mib = (resident_kib(pid) - before) / 1024
        print(
            f"\nmemory: 3,000 distinct 60 KB bodies in {time.monotonic() - started:.1f} s; "
            f"server tree {before / 1024:.1f} MiB -> grew {grown_mib:.1f} MiB"
        )
        assert statuses <= {200, 202}
        assert grown_mib < 40, f"the web server grew {grown_mib:.1f} MiB"


# --- The watch-and-steer surface: streams, Last-Event-ID, Cancel-After, retry --------------------


@pytest.mark.parametrize("lane", LANES)
def test_hostile_stream_retry_and_deadline_requests(live_url, session, lane):
    job_id = send(session, "POST", f"{live_url}/factorize", lane, json={"number": 4343}).json()["job_id"]
    ids = [job_id, "x" * 10_000, "../../etc/passwd", "factorization-" + "0" * 32, "%00"]
    good_event_ids = ["", "0-0", "00001-0", "18446744073709551615-18446744073709551615"]
    last_event_ids = [*good_event_ids, *OVERFLOWING_EVENT_IDS, "9" * 5000, "a-b", "1-1 X: y", "\u00ff" * 100]
    for hostile in ids:
        response = send(session, "POST", f"{live_url}/jobs/{hostile}/retry", lane)
        assert_json_answer(response, f"POST /jobs/{hostile[:40]}/retry")
        assert response.status_code in (404, 409), response.status_code
    for value in last_event_ids:
        headers = {"Accept": "text/event-stream", "Last-Event-ID": value.encode("latin-1", "replace").decode("latin-1")}
        for hostile in ids[1:]:
            response = send(session, "GET", f"{live_url}/jobs/{hostile}", lane, headers=headers)
            assert_json_answer(response, f"stream /jobs/{hostile[:40]} Last-Event-ID {value[:20]!r}")
            # A path no job id can match is the router's 404; a job id, checked after the header.
            assert response.status_code in ((404,) if value in good_event_ids else (400, 404)), response.text
            if response.status_code == 400:
                assert "Last-Event-ID" in response.json(), (value, response.text)
    for value in ["9" * 5000, "1h" * 100, "0", "-1", "1e3", "\u00b2"]:
        header = {"Cancel-After": value.encode().decode("latin-1")}
        for path, body in (("/factorize", {"number": 4344}), ("/factorize/batch", {"numbers": [4345, None]})):
            response = send(session, "POST", live_url + path, lane, json=body, headers=header)
            assert_json_answer(response, f"POST {path} Cancel-After {value[:20]!r}")
            assert response.status_code == 400 and "Cancel-After" in response.json()


# Stream ids are two unsigned 64-bit integers: Redis answers any of these with an error (once a 500).
OVERFLOWING_EVENT_IDS = [
    "18446744073709551616-0",
    "0-18446744073709551616",
    "99999999999999999999-0",
    "-1-0",
    "0--1",
    "1",
    "1-",
    "-1",
    "1-" + "9" * 30,
]


@pytest.mark.parametrize("lane", LANES)
def test_last_event_ids_past_64_bits_are_a_400_naming_the_header(live_url, session, lane):
    job_id = send(session, "POST", f"{live_url}/factorize", lane, json={"number": 4346}).json()["job_id"]
    for value in OVERFLOWING_EVENT_IDS:
        headers = {"Accept": "text/event-stream", "Last-Event-ID": value}
        response = send(session, "GET", f"{live_url}/jobs/{job_id}", lane, headers=headers)
        assert_json_answer(response, f"Last-Event-ID {value!r}")
        assert response.status_code == 400, (value, response.status_code, response.text[:200])
        assert "Last-Event-ID" in response.json() and "event id" in response.json()["Last-Event-ID"][0]
    # The largest ids, and leading zeros (read as Redis reads them), open the stream as usual.
    for value in ("18446744073709551615-18446744073709551615", "0000000000000000001-00"):
        headers = {"Accept": "text/event-stream", "Last-Event-ID": value}
        with session.get(f"{live_url}/jobs/{job_id}", headers={**LANES[lane], **headers}, stream=True, timeout=30) as r:
            assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream"), value


@pytest.mark.parametrize("lane", LANES)
@pytest.mark.parametrize("task_type", TASK_TYPES, ids=lambda task_type: task_type.name)
def test_a_submit_asking_for_its_stream_answers_hostile_input_as_json_naming_the_field(
    live_url, session, lane, task_type
):
    """`POST /<type>` with `Accept: text/event-stream` (a submit that is its own stream): hostile
    fields, raw bodies, webhooks and Last-Event-IDs get the submit's JSON 4xx, never a stream."""
    stream = {"Accept": "text/event-stream"}
    url = f"{live_url}/{task_type.path}"
    for body in field_cases(task_type):
        response = send(session, "POST", url, lane, json=body, headers=stream, stream=True)
        what = f"stream POST /{task_type.path} {json.dumps(body)[:80]}"
        if response.status_code == 200:  # an input taken as ordinary: its job's stream, open until the job ends
            assert response.headers["Content-Type"].startswith("text/event-stream"), what
            response.close()
            continue
        assert_json_answer(response, what)
        if response.status_code == 400:
            assert set(response.json()) & {*task_type.input_fields, "non_field_errors"}, (what, response.json())
    for body in RAW_BODIES:
        response = send(session, "POST", url, lane, data=body, headers={**stream, "Content-Type": "application/json"})
        assert_json_answer(response, f"stream POST /{task_type.path} {body[:40]!r}")
        assert response.status_code >= 400, (body[:40], response.status_code)
    good = _valid_input(task_type)
    for webhook in (None, "x" * 70_000, [], {"url": "https://example.com/hook"}, {"url": {"a": [1] * 1000}}):
        response = send(session, "POST", url, lane, json={**good, "webhook": webhook}, headers=stream)
        assert_json_answer(response, f"stream POST /{task_type.path} webhook {str(webhook)[:40]}")
        assert response.status_code == 400 and "webhook" in response.json(), response.text[:200]
    for value in [*OVERFLOWING_EVENT_IDS, "9" * 5000, "a-b"]:  # (granian drops a header of non-ASCII bytes)
        response = send(session, "POST", url, lane, json=good, headers={**stream, "Last-Event-ID": value})
        assert_json_answer(response, f"stream POST /{task_type.path} Last-Event-ID {value[:20]!r}")
        assert response.status_code == 400 and "Last-Event-ID" in response.json(), (value, response.text[:200])
