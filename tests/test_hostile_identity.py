"""Hostile identities: malformed and invented bearer tokens get a JSON 401 on every endpoint; failed
admin logins lock the address out; one client past its held requests is answered at once while
another client is still held."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import service_env, web_server
from tests.hostile import LANES, send

MALFORMED_BEARERS = [
    "",  # an empty header is a bad key, not anonymous
    "Bearer",
    "Bearer ",
    "Bearer " + "x" * 10_000,
    "Bearer fzk_",
    "Bearer fzk__",
    "Bearer fzk_abcdefgh_",
    "Bearer fzk_abcdefgh_" + "b" * 43,  # well formed, never issued
    "Token fzk_abcdefgh_" + "b" * 43,
    "bearer fzk_abcdefgh_" + "b" * 43,
    "Bearer fzk_abcdefgh_bbbb extra",
    "Bearer fzk_abcdefgh_" + "é" * 43,  # granian passes a value it cannot decode on as empty
    "Bearer ../../etc/passwd",
    "Bearer ' OR 1=1 --",
]


@pytest.mark.parametrize("lane", LANES)
def test_malformed_and_invented_bearer_tokens_get_a_json_401_on_every_endpoint(live_url, session, lane, redis_conn):
    job_id = send(session, "POST", f"{live_url}/factorize", lane, json={"number": 6161}).json()["job_id"]
    requests_to_make = [
        ("POST", "/factorize", {"number": 6162}),
        ("POST", "/factorize/batch", {"numbers": [6163]}),
        ("GET", f"/jobs/{job_id}", None),
        ("DELETE", f"/jobs/{job_id}", None),
        ("GET", f"/jobs/{job_id}/webhooks", None),
        ("GET", "/queues", None),
        ("GET", "/factorize", None),
    ]
    for authorization in MALFORMED_BEARERS:
        header = {"Authorization": authorization.encode().decode("latin-1")}  # its UTF-8 bytes, as sent
        for method, path, body in requests_to_make:
            response = send(session, method, live_url + path, lane, json=body, headers=header)
            what = f"{method} {path} Authorization: {authorization[:40]!r}"
            assert response.status_code == 401, (what, response.status_code, response.text[:200])
            assert response.headers["Content-Type"].startswith("application/json"), what
            assert response.headers["WWW-Authenticate"] == "Bearer", what
            assert set(response.json()) == {"detail"}, what
    # A NUL is refused by the HTTP server itself, before the service sees it (no JSON, but a 4xx).
    response = send(
        session, "POST", f"{live_url}/factorize", lane, json={"number": 6164}, headers={"Authorization": "Bearer \x00"}
    )
    assert response.status_code == 400
    assert len(redis_conn.keys("rq:job:*")) == 1  # only the first, unauthenticated submit
    assert send(session, "GET", f"{live_url}/jobs/{job_id}", lane).json()["status"] == "queued"  # not cancelled


# --- Staff logins: the admin's login page only, throttled ---------------------------------------


@pytest.mark.django_db
def test_failed_admin_logins_lock_the_address_out(client, django_user_model, settings):
    django_user_model.objects.create_superuser("admin", "admin@example.com", "right-password-1234")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post("/admin/login/", {"username": "admin", "password": "wrong"})
        assert response.status_code == 200  # the form again, with its error
    assert client.post("/admin/login/", {"username": "admin", "password": "wrong"}).status_code == 429
    # Locked: even the right password is refused from this address; another address may log in.
    assert client.post("/admin/login/", {"username": "admin", "password": "right-password-1234"}).status_code == 429
    other = client.post(
        "/admin/login/", {"username": "admin", "password": "right-password-1234"}, REMOTE_ADDR="192.0.2.7"
    )
    assert other.status_code == 302


def create_api_key(name: str) -> str:
    """A key in the database the web server reads, made as an operator makes one."""
    done = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", name],
        cwd=Path(__file__).resolve().parent.parent,
        env=service_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_a_client_past_its_held_requests_gets_answers_at_once_and_others_are_still_held(redis_conn):
    """Four held requests per client: a fifth stream ends at once with a reconnection delay, a
    fifth long poll or waiting submit answers at once, on both lanes; another client waits."""
    env = {"MAX_HELD_PER_CLIENT": "4", "WEB_THREADS": "96", "THROTTLE_POLL": "", "THROTTLE_SUBMIT": ""}
    other = {"Authorization": f"Bearer {create_api_key('hostile-other')}"}
    with web_server(**env) as url:
        body = {"seconds": 1, "tag": "held-cap"}  # no worker: it stays queued
        job_id = requests.post(f"{url}/sleepy", json=body, timeout=10).json()["job_id"]
        stream = {"Accept": "text/event-stream"}
        held = [requests.get(f"{url}/jobs/{job_id}", headers=stream, stream=True, timeout=30) for _ in range(4)]
        for response in held:
            assert response.status_code == 200 and next(response.iter_lines()) == b"event: status"
        try:
            for cookie in LANES.values():
                fifth = requests.get(f"{url}/jobs/{job_id}", headers={**stream, **cookie}, timeout=10)
                assert fifth.status_code == 200 and fifth.text.rstrip().endswith("retry: 5000"), fifth.text[-200:]
                for method, path, json_body in (("GET", f"/jobs/{job_id}", None), ("POST", "/sleepy", body)):
                    began = time.monotonic()
                    response = requests.request(
                        method, url + path, json=json_body, headers={"Prefer": "wait=5", **cookie}, timeout=10
                    )
                    assert response.status_code == 202 and "Preference-Applied" not in response.headers
                    assert time.monotonic() - began < 4, f"{method} {path} was held"
            # Another client's waiting submit (a key's: a client of its own) is held as asked.
            began = time.monotonic()
            waited = requests.post(f"{url}/sleepy", json=body, headers={"Prefer": "wait=1", **other}, timeout=10)
            assert waited.headers.get("Preference-Applied") == "wait=1" and time.monotonic() - began >= 0.9
        finally:
            for response in held:
                response.close()
