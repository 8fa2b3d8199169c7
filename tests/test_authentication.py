"""Authentication in process: a key is looked up once per cache lifetime, the caches are bounded,
session users and staff logins are served, failed authentications are limited per address without
a database lookup, and keys sent in URLs are refused and kept out of the logs. The keys against real
servers: test_api_keys.py."""

from __future__ import annotations

import logging
import secrets

import pytest
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

UNKNOWN_KEY = "fzk_00000000_" + "A" * 43


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
        statuses = [api.get("/factorize", HTTP_AUTHORIZATION=f"Bearer {random_key()}", **attacker) for _ in range(300)]
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
