"""Hostile webhook fields (URLs, event filters, an escaped key), alone and in batches, on both lanes:
each is refused with a JSON 4xx naming the field, and nothing is enqueued for a refused submit."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import web_server
from tests.hostile import LANES, assert_json_answer, send

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"hostile-input test signing key!!").decode()
ALLOWED_HOOK = "http://127.0.0.1:9/hook"  # the discard port: no worker runs, nothing is delivered
HOSTILE_WEBHOOKS = [
    None,
    True,
    1.5,
    [],
    {},
    "",
    " ",
    "x" * 70_000,
    "\u0000",
    [[[[[[[[ALLOWED_HOOK]]]]]]]],
    [ALLOWED_HOOK],
    "\ud83d\ude00" * 100,
    ALLOWED_HOOK + "\u0000",
    ALLOWED_HOOK + " x",
    ALLOWED_HOOK + "\r\nX-Injected: 1",  # urlsplit drops CR and LF: without a check this passed
    ALLOWED_HOOK + "\tx",  # (a trailing one is trimmed, as DRF trims every string field)
    ALLOWED_HOOK + "/é",
    ALLOWED_HOOK + "/" + "a" * 2000,
    "file:///etc/passwd",
    "gopher://127.0.0.1:9/",
    "ftp://127.0.0.1:9/",
    "javascript:alert(1)",
    "//127.0.0.1:9/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:9/",
    "http://0x7f.1:9/",
    "http://2130706433:9/",
    "http://127.0.0.1:99999/",
    "http://127.0.0.1:9@evil.example/",
    "http://user:password@127.0.0.1:9/hook",
    "http://[127.0.0.1:9/",
    "http://127.0.0.1:9:9/",
]
HOSTILE_FILTERS = [
    None,
    True,
    "completed",
    [],
    {},
    ["nope"],
    ["completed"] * 1000,
    [None],
    [["completed"]],
    ["COMPLETED"],
    [1],
    "x" * 70_000,
    [[[[[[[["completed"]]]]]]]],
]


@pytest.fixture(scope="module")
def hooks_url(redis_conn) -> Iterator[str]:
    """A web server with webhooks on, allowed to call one loopback address."""
    with web_server(WEBHOOK_SECRET=WEBHOOK_SECRET, WEBHOOK_ALLOWED_HOSTS="127.0.0.1:9") as url:
        yield url


def webhook_bodies() -> Iterator[dict]:
    for webhook in HOSTILE_WEBHOOKS:
        yield {"number": 5151, "webhook": webhook}
    for events in HOSTILE_FILTERS:
        yield {"number": 5151, "webhook": ALLOWED_HOOK, "webhook_events_filter": events}
    yield {"number": 5151, "webhook_events_filter": ["completed"]}  # a filter without a webhook


def assert_refused_naming_a_webhook_field(response: requests.Response, what: str) -> None:
    assert_json_answer(response, what)
    assert response.status_code in (400, 413), (what, response.status_code, response.text[:200])
    if response.status_code == 400:
        assert set(response.json()) & {"webhook", "webhook_events_filter"}, (what, response.json())


@pytest.mark.parametrize("lane", LANES)
def test_hostile_webhook_fields_are_refused_naming_the_field(hooks_url, session, lane, redis_conn):
    for body in webhook_bodies():
        what = f"POST /factorize {json.dumps(body)[:100]}"
        assert_refused_naming_a_webhook_field(send(session, "POST", f"{hooks_url}/factorize", lane, json=body), what)
    # A webhook key spelled with a JSON escape is the same key: refused, not enqueued without it.
    escaped = b'{"number": 5151, "\\u0077ebhook": "file:///etc/passwd"}'
    response = send(
        session, "POST", f"{hooks_url}/factorize", lane, data=escaped, headers={"Content-Type": "application/json"}
    )
    assert_refused_naming_a_webhook_field(response, "an escaped webhook key")
    assert not redis_conn.keys("rq:job:*"), "a refused submit enqueued a job"
    # Each bad subscription in a batch fails alone; the good one is subscribed.
    items = [{"number": 5152, "webhook": ALLOWED_HOOK}, *webhook_bodies()]
    response = send(session, "POST", f"{hooks_url}/factorize/batch", lane, json={"items": items})
    if response.status_code == 413:  # the 70 KB values: without them the batch fits
        items = [item for item in items if len(json.dumps(item)) < 10_000]
        response = send(session, "POST", f"{hooks_url}/factorize/batch", lane, json={"items": items})
    assert response.status_code == 200, response.text[:300]
    results = response.json()["results"]
    assert results[0]["status"] == "queued"
    for item, result in zip(items[1:], results[1:], strict=True):
        assert result["status"] == "invalid" and set(result["errors"]) & {"webhook", "webhook_events_filter"}, (
            item,
            result,
        )
    subscriptions = send(session, "GET", f"{hooks_url}/jobs/{results[0]['job_id']}/webhooks", lane).json()
    assert [s["url"] for s in subscriptions["subscriptions"]] == [ALLOWED_HOOK]
