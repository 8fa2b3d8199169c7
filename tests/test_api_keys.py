"""API keys: created by manage.py (printed once, stored as a SHA-256), checked on every request
that presents one (unknown or revoked: 401 in every mode), required with REQUIRE_API_KEY=1 (401
JSON with `WWW-Authenticate: Bearer`, the lean lane standing aside), counted, and used by the
command-line client. Real web servers on their own migrated SQLite databases, real workers."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from factorize_app.api.identity import api_keys
from factorize_app.api.identity.api_keys import ExpiringCache, FailedAuthentications, InvalidApiKey, UseCounter
from factorize_app.api.identity.authentication import cached_identity, client_identity, client_name, identify
from factorize_app.api.identity.clients import ClientIdentity
from factorize_app.models import ApiKey, key_digest
from project.log_format import JsonFormatter, TextFormatter, redact
from tests.conftest import PYTHON, ROOT, poll_until_done, service_env, wait_until, web_server

KEY_FORMAT = re.compile(r"fzk_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")
UNKNOWN_KEY = "fzk_00000000_" + "A" * 43
FACTORIZATION_408216 = "2^3 3^1 73^1 233^1"


# --- Helpers: a database of keys, servers on it ----------------------------------------------


@dataclass
class KeyDatabase:
    path: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=service_env(DATABASE_URL=self.url),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def create_key(self, name: str = "test key", *options: str) -> str:
        return self.manage("create_api_key", name, *options).stdout.strip()

    def row(self, key: str) -> dict:
        with sqlite3.connect(self.path) as db:
            db.row_factory = sqlite3.Row
            found = db.execute("SELECT * FROM factorize_app_apikey WHERE digest = ?", (key_digest(key),)).fetchone()
        assert found is not None, "no stored key has this key's digest"
        return dict(found)


@pytest.fixture(scope="module")
def key_db(tmp_path_factory) -> KeyDatabase:
    database = KeyDatabase(tmp_path_factory.mktemp("api-keys") / "db.sqlite3")
    database.manage("migrate", "--noinput", "-v0")
    return database


@contextmanager
def server_on(key_db: KeyDatabase, **env: str) -> Iterator[str]:
    with web_server(DATABASE_URL=key_db.url, API_KEY_CACHE_SECONDS="1", API_KEY_USE_FLUSH_SECONDS="1", **env) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_url(key_db, redis_conn) -> Iterator[str]:
    """A server with REQUIRE_API_KEY=1 and METRICS_REQUIRE_API_KEY=1."""
    with server_on(key_db, REQUIRE_API_KEY="1", METRICS_REQUIRE_API_KEY="1") as url:
        yield url


@pytest.fixture(scope="module")
def open_url(key_db, redis_conn) -> Iterator[str]:
    """A server in the default mode: anonymous clients served, keys checked when presented."""
    with server_on(key_db) as url:
        yield url


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_401_json(response: requests.Response) -> None:
    assert response.status_code == 401, (response.request.method, response.url, response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert isinstance(response.json()["detail"], str)


def submit_with(url: str, key: str, number: int = 408216) -> dict:
    response = requests.post(f"{url}/factorize", json={"number": number}, headers=bearer(key), timeout=10)
    assert response.status_code in (200, 202), response.text
    return response.json()


# --- Creating keys ---------------------------------------------------------------------------


def test_create_api_key_prints_only_the_key_and_stores_only_its_digest(key_db):
    result = key_db.manage("create_api_key", "reporting team", "--max-queued", "7", "--max-running", "2")
    key = result.stdout.strip()
    assert KEY_FORMAT.fullmatch(key), result.stdout  # the key alone: `KEY=$(manage.py create_api_key ...)`
    row = key_db.row(key)
    assert row["digest"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["name"] == "reporting team"
    assert (row["max_queued"], row["max_running"], row["use_count"], row["revoked_at"]) == (7, 2, 0, None)
    assert key.split("_")[1] == row["prefix"]
    assert key not in {str(value) for value in row.values()}
    assert key.encode() not in key_db.path.read_bytes(), "the key itself is stored somewhere in the database"
    assert key != key_db.create_key(), "every key is new"


def test_revoke_api_key_names_a_missing_prefix(key_db):
    result = key_db.manage("revoke_api_key", "ffffffff", check=False)
    assert result.returncode != 0
    assert "no API key has the prefix 'ffffffff'" in result.stderr


# --- REQUIRE_API_KEY=1 -----------------------------------------------------------------------


def test_without_a_key_every_api_request_is_401_json(keyed_url, key_db, start_worker):
    start_worker("factorization")
    key = key_db.create_key()
    submitted = poll_until_done(
        lambda: requests.post(f"{keyed_url}/factorize", json={"number": 408216}, headers=bearer(key))
    )
    job_id = submitted["job_id"]
    anonymous = [
        ("POST", "/factorize", {"number": 408216}),
        ("POST", "/factorize/", {"number": 408216}),
        ("POST", "/factorize/batch", {"numbers": [408216, 12]}),
        ("GET", f"/jobs/{job_id}", None),  # a job that exists: the lean lane would answer it 200
        ("GET", f"/jobs/{job_id}/", None),
        ("DELETE", f"/jobs/{job_id}", None),
        ("GET", "/queues", None),
        ("GET", "/factorize", None),
        ("GET", "/", None),
    ]
    for method, path, body in anonymous:
        assert_401_json(requests.request(method, f"{keyed_url}{path}", json=body, timeout=10))
    # ...and with the key, the same requests are served.
    assert submit_with(keyed_url, key)["factorization_str"] == FACTORIZATION_408216
    batch = requests.post(f"{keyed_url}/factorize/batch", json={"numbers": [408216]}, headers=bearer(key), timeout=10)
    assert batch.status_code == 200 and batch.json()["results"][0]["done"], batch.text
    assert requests.get(f"{keyed_url}/jobs/{job_id}", headers=bearer(key), timeout=10).json()["done"]
    assert requests.get(f"{keyed_url}/queues", headers=bearer(key), timeout=10).status_code == 200
    assert requests.post(f"{keyed_url}/factorize", json={"number": 12}, headers={"Authorization": f"Token {key}"}).ok
    assert requests.post(f"{keyed_url}/factorize", json={"number": 12}, headers={"Authorization": f"bearer {key}"}).ok


def test_health_probes_need_no_key(keyed_url):
    for path in ("/healthz", "/readyz", "/healthz/", "/readyz/"):
        assert requests.get(f"{keyed_url}{path}", timeout=10).status_code == 200, path


def test_the_lean_lane_never_answers_an_anonymous_request(keyed_url, key_db):
    """Many concurrent anonymous polls of an existing job, the lean lane's hot path: not one is served."""
    key = key_db.create_key()
    job_id = submit_with(keyed_url, key)["job_id"]
    statuses: list[int] = []

    def poll() -> None:
        with requests.Session() as session:
            for _ in range(25):
                statuses.append(session.get(f"{keyed_url}/jobs/{job_id}", timeout=10).status_code)
                statuses.append(session.post(f"{keyed_url}/factorize", json={"number": 408216}, timeout=10).status_code)

    threads = [threading.Thread(target=poll) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses and set(statuses) == {401}, sorted(set(statuses))


def test_metrics_need_a_key_when_metrics_require_one(keyed_url, open_url, key_db):
    key = key_db.create_key()
    assert_401_json(requests.get(f"{keyed_url}/metrics", timeout=10))
    assert_401_json(requests.get(f"{keyed_url}/metrics", headers=bearer(UNKNOWN_KEY), timeout=10))
    served = requests.get(f"{keyed_url}/metrics", headers=bearer(key), timeout=10)
    assert served.status_code == 200 and "factorize_redis_up" in served.text
    # Off (the default, even with keys otherwise required elsewhere): a scraper needs nothing.
    assert "factorize_redis_up" in requests.get(f"{open_url}/metrics", timeout=10).text


# --- Unknown and revoked keys: 401 in every mode ---------------------------------------------


@pytest.mark.parametrize("mode", ["required", "optional"])
def test_unknown_malformed_and_revoked_keys_are_401(mode, keyed_url, open_url, key_db, start_worker):
    url = keyed_url if mode == "required" else open_url
    start_worker("factorization")
    for bad in (UNKNOWN_KEY, "not-a-key", "fzk_" + "x" * 5000, UNKNOWN_KEY + "A"):
        assert_401_json(requests.post(f"{url}/factorize", json={"number": 12}, headers=bearer(bad), timeout=10))
        assert_401_json(requests.get(f"{url}/queues", headers=bearer(bad), timeout=10))
    assert_401_json(requests.post(f"{url}/factorize", json={"number": 12}, headers={"Authorization": "Bearer"}))
    key = key_db.create_key(f"revoked in {mode} mode")
    assert submit_with(url, key)["done"] is not None
    revoked = key_db.manage("revoke_api_key", key.split("_")[1])
    assert "revoked API key" in revoked.stdout
    # The server's key cache lives API_KEY_CACHE_SECONDS (1 s here): refused within that.
    wait_until(
        lambda: (
            requests.post(f"{url}/factorize", json={"number": 12}, headers=bearer(key), timeout=10).status_code == 401
        ),
        timeout=10,
        what="the revoked key to be refused",
    )
    assert_401_json(requests.post(f"{url}/factorize", json={"number": 12}, headers=bearer(key), timeout=10))
    assert key_db.row(key)["revoked_at"] is not None
    if mode == "optional":  # the control: anonymous clients are still served in this mode
        assert requests.post(f"{url}/factorize", json={"number": 12}, timeout=10).status_code in (200, 202)


# --- Use counting ----------------------------------------------------------------------------


def test_uses_are_counted_and_written_after_the_flush_interval(keyed_url, key_db):
    key = key_db.create_key("counted")
    assert key_db.row(key)["last_used_at"] is None
    for number in range(2, 9):
        submit_with(keyed_url, key, number)
    requests.get(f"{keyed_url}/queues", headers=bearer(key), timeout=10).raise_for_status()
    row = wait_until(
        lambda: (row := key_db.row(key))["use_count"] == 8 and row,
        timeout=15,
        what="8 uses to be written (API_KEY_USE_FLUSH_SECONDS=1)",
    )
    assert row["last_used_at"] is not None


# --- The command-line client -----------------------------------------------------------------


def run_client(url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = service_env(**env)
    if "FACTORIZE_TOKEN" not in env:
        environment.pop("FACTORIZE_TOKEN", None)  # none left over from the shell
    return subprocess.run(
        [PYTHON, "-m", "factorize_app.client", "--url", url, "--no-progress", "--timeout", "60", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_the_client_with_and_without_a_key(keyed_url, key_db, start_worker):
    start_worker("factorization")
    key = key_db.create_key("cli")
    refused = run_client(keyed_url, "408216")
    assert refused.returncode == 2, refused
    assert refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert "401" in line and "--token" in line, line
    wrong = run_client(keyed_url, "--token", UNKNOWN_KEY, "408216")
    assert wrong.returncode == 2 and "401" in wrong.stderr and len(wrong.stderr.splitlines()) == 1, wrong
    served = run_client(keyed_url, "--token", key, "408216")
    assert served.returncode == 0, served
    assert served.stdout.splitlines() == [f"408216 = {FACTORIZATION_408216}"]
    from_env = run_client(keyed_url, "1000003", FACTORIZE_TOKEN=key)
    assert from_env.returncode == 0, from_env
    assert from_env.stdout.splitlines() == ["1000003 = 1000003^1"]


# --- In process: identities, the caches, sessions --------------------------------------------


@pytest.fixture
def uses(monkeypatch) -> UseCounter:
    """A fresh use counter with no background thread (nothing written behind the test's back),
    and empty key caches."""
    counter = UseCounter(background=False)
    monkeypatch.setattr(api_keys, "USES", counter)
    monkeypatch.setattr(api_keys, "_VALID_KEYS", ExpiringCache(max_entries=10))
    monkeypatch.setattr(api_keys, "_REFUSED_KEYS", ExpiringCache(max_entries=10))
    monkeypatch.setattr(api_keys, "FAILURES", FailedAuthentications())
    return counter


@pytest.mark.django_db
def test_a_key_is_looked_up_once_per_cache_lifetime_and_a_bad_one_too(settings, django_assert_num_queries, uses):
    settings.API_KEY_CACHE_SECONDS = 60
    api_key, plaintext = ApiKey.create_key(name="cached", max_queued=3)
    assert api_key.digest == key_digest(plaintext) and plaintext not in (api_key.prefix, api_key.digest)
    wrong = "fzk_11111111_" + "B" * 43
    with django_assert_num_queries(2):  # one for the key, one for the unknown key; none after
        for _ in range(50):
            identity = identify({"HTTP_AUTHORIZATION": f"Bearer {plaintext}", "REMOTE_ADDR": "10.0.0.1"})
            with pytest.raises(InvalidApiKey):
                identify({"HTTP_AUTHORIZATION": f"Bearer {wrong}", "REMOTE_ADDR": "10.0.0.1"})
            with pytest.raises(InvalidApiKey):  # malformed: refused without a lookup
                identify({"HTTP_AUTHORIZATION": "Bearer " + "z" * 100_000})
    assert identity == ClientIdentity(name=f"key-{api_key.pk}", key_id=api_key.pk, max_queued=3)
    with django_assert_num_queries(1):  # one write for 50 uses
        uses.flush()
    api_key.refresh_from_db()
    assert api_key.use_count == 50 and api_key.last_used_at is not None
    assert client_name({"REMOTE_ADDR": "10.0.0.1"}) == "address-10.0.0.1"
    assert client_name({"REMOTE_ADDR": "10.0.0.1", "HTTP_AUTHORIZATION": "Basic dXNlcjpwdw=="}) == "address-10.0.0.1"


def test_the_key_cache_is_bounded_and_expires():
    cache = ExpiringCache(max_entries=3)
    for index in range(10):
        cache.put(f"k{index}", index, expires=100.0)
    assert len(cache) == 3
    assert cache.get("k0", now=0.0) is None and cache.get("k9", now=0.0) == 9
    assert cache.get("k9", now=100.0) is None, "expired"


@pytest.mark.django_db
def test_with_keys_required_a_session_user_is_served_and_csrf_still_applies(api, settings, redis_conn, uses):
    settings.REQUIRE_API_KEY = True
    assert api.post("/factorize", {"number": 12}, format="json").status_code == 401
    user = get_user_model().objects.create_user("browser-user", password="a-password-1234")
    checked = APIClient(enforce_csrf_checks=True)
    checked.force_login(user)
    refused = checked.post("/factorize", {"number": 12}, format="json")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    api.force_login(user)
    assert api.post("/factorize", {"number": 12}, format="json").status_code in (200, 202)
    request = api.get("/queues").wsgi_request
    assert client_identity(request) == ClientIdentity(name=f"user-{user.pk}", staff=False)


@pytest.mark.django_db
def test_metrics_behind_their_setting_answer_a_staff_login(client, admin_client, settings, uses):
    settings.METRICS_REQUIRE_API_KEY = True
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused["WWW-Authenticate"] == "Bearer", refused.content
    assert "factorize_redis_up" in admin_client.get("/metrics").content.decode()
    _, plaintext = ApiKey.create_key(name="scraper")
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {plaintext}").status_code == 200
    settings.METRICS_REQUIRE_API_KEY = False
    assert client.get("/metrics").status_code == 200


@pytest.mark.django_db
def test_cached_identity_answers_only_what_needs_no_database_and_no_401(settings, django_assert_num_queries, uses):
    """The lean lane's question: a key already verified here, or an anonymous client when allowed."""
    settings.API_KEY_CACHE_SECONDS = 60
    api_key, plaintext = ApiKey.create_key(name="lean")
    keyed = {"HTTP_AUTHORIZATION": f"Bearer {plaintext}", "REMOTE_ADDR": "10.0.0.2"}
    with django_assert_num_queries(0):
        assert cached_identity(dict(keyed)) is None, "not verified in this process yet: DRF looks it up"
        assert cached_identity({"HTTP_AUTHORIZATION": f"Bearer {UNKNOWN_KEY}"}) is None
        assert cached_identity({"HTTP_AUTHORIZATION": "Bearer " + "x" * 10_000}) is None
        assert cached_identity({"REMOTE_ADDR": "10.0.0.2"}).name == "address-10.0.0.2"
    identify(dict(keyed))  # DRF's lookup
    with django_assert_num_queries(0):
        assert cached_identity(dict(keyed)).name == f"key-{api_key.pk}"
    settings.REQUIRE_API_KEY = True
    assert cached_identity({"REMOTE_ADDR": "10.0.0.2"}) is None, "keys required: DRF answers 401"
    assert cached_identity(dict(keyed)).key_id == api_key.pk
    uses.flush()
    api_key.refresh_from_db()
    assert api_key.use_count == 3, "DRF's lookup and the two lean answers"


# --- Failed authentications: limited per address; keys in URLs kept out of the logs ----------


def random_key() -> str:
    """A well-formed key that no one holds: each costs a lookup unless the address is limited."""
    return f"fzk_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


@pytest.mark.django_db
def test_failed_authentications_past_the_limit_are_429_without_a_database_lookup(api, settings, uses):
    """300 random keys from one address once cost 300 lookups and answered 401 each: now the
    first THROTTLE_AUTH_FAILURES cost a lookup, the rest a 429 with Retry-After and no query. A key
    this process has verified still works from that address; another address is not limited."""
    settings.THROTTLE_AUTH_FAILURES = "5/minute"
    settings.API_KEY_CACHE_SECONDS = 60
    api_key, plaintext = ApiKey.create_key(name="verified")
    attacker = {"REMOTE_ADDR": "10.9.8.7"}
    assert api.get("/factorize", HTTP_AUTHORIZATION=f"Bearer {plaintext}", **attacker).status_code == 200
    with CaptureQueriesContext(connection) as queries:
        statuses = [
            api.get("/factorize", HTTP_AUTHORIZATION=f"Bearer {random_key()}", **attacker) for _ in range(300)
        ]
    assert [r.status_code for r in statuses] == [401] * 5 + [429] * 295
    assert len(queries) == 5, [query["sql"] for query in queries.captured_queries]
    refused = statuses[-1]
    assert refused.headers["Content-Type"].startswith("application/json")
    assert "failed authentications" in refused.json()["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    malformed = api.get("/factorize", HTTP_AUTHORIZATION="Bearer nonsense", **attacker)
    assert malformed.status_code == 429, "malformed keys count too, and are refused alike"
    with CaptureQueriesContext(connection) as queries:
        verified = api.get("/factorize", HTTP_AUTHORIZATION=f"Bearer {plaintext}", **attacker)
    assert verified.status_code == 200 and len(queries) == 0, "a verified key needs no lookup: still served"
    assert api.get("/factorize", **attacker).status_code == 200, "no key: an anonymous request as before"
    other = api.get("/factorize", HTTP_AUTHORIZATION=f"Bearer {random_key()}", REMOTE_ADDR="10.9.8.8")
    assert other.status_code == 401, "another address has its own count"
    settings.METRICS_REQUIRE_API_KEY = True
    metrics = api.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {random_key()}", **attacker)
    assert metrics.status_code == 429 and metrics.headers["Retry-After"], "the plain Django views too"


@pytest.mark.django_db
def test_an_ipv6_client_counts_by_its_64(api, settings, uses):
    """A host holds a whole /64: its addresses share one count, so fresh ones buy no lookups."""
    settings.THROTTLE_AUTH_FAILURES = "3/minute"
    statuses = [
        api.get("/factorize", HTTP_AUTHORIZATION=f"Bearer {random_key()}", REMOTE_ADDR=f"2001:db8:1:2::{index:x}")
        for index in range(1, 8)
    ]
    assert [r.status_code for r in statuses] == [401] * 3 + [429] * 4
    elsewhere = api.get("/factorize", HTTP_AUTHORIZATION=f"Bearer {random_key()}", REMOTE_ADDR="2001:db8:1:3::1")
    assert elsewhere.status_code == 401, "the next /64 is another client"


def test_the_failure_count_is_bounded_and_ends_with_its_window(monkeypatch, settings):
    settings.THROTTLE_AUTH_FAILURES = "2/minute"
    failures = FailedAuthentications(max_entries=3)
    now = [600.0]
    monkeypatch.setattr(api_keys.time, "time", lambda: now[0])
    for _ in range(2):
        failures.count("10.0.0.1")
    assert failures.retry_after("10.0.0.1") == 60
    now[0] = 659.5
    assert failures.retry_after("10.0.0.1") == 1
    now[0] = 660.0
    assert failures.retry_after("10.0.0.1") is None, "a new window"
    for index in range(10):
        failures.count(f"10.0.1.{index}")
    assert len(failures._counts) == 3


@pytest.mark.django_db
def test_a_key_in_the_query_string_is_refused_and_redacted_from_the_logs(client, settings, caplog, uses):
    """Django's `django.request` warning carries the request, whose repr is the path with its
    query string: a key (or any key, token or secret parameter) there is redacted, in both formats."""
    settings.REQUIRE_API_KEY = True
    api_key, plaintext = ApiKey.create_key(name="in a url")
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.get(f"/factorize?key={plaintext}&api_key=hunter2&access_token=tok3n&number=12")
    assert response.status_code == 401
    records = [record for record in caplog.records if record.name == "django.request"]
    assert records, "Django logs the refused request"
    secret = plaintext.rsplit("_", 1)[1]
    for record in records:
        for formatter in (JsonFormatter(), TextFormatter()):
            line = formatter.format(record)
            assert "/factorize" in line and "number=12" in line, line
            for leaked in (secret, "hunter2", "tok3n"):
                assert leaked not in line, line
            assert "[redacted]" in line
    assert secret not in caplog.text


def test_redaction_of_access_lines_keeps_the_rest():
    key = "fzk_0123abcd_" + "S" * 43
    assert redact('127.0.0.1 - "GET /jobs/x?token=abc&wait=5 HTTP/1.1" 401') == (
        '127.0.0.1 - "GET /jobs/x?token=[redacted]&wait=5 HTTP/1.1" 401'
    )
    assert redact(f"Authorization: Bearer {key}") == "Authorization: Bearer fzk_0123abcd_[redacted]"
    assert redact("/factorize?number=12&monkey_business=1") == "/factorize?number=12&monkey_business=[redacted]"
    assert redact("nothing to hide: a=b") == "nothing to hide: a=b"
