"""API keys: created by manage.py (printed once, stored as a SHA-256), checked on every request
that presents one (unknown or revoked: 401 in every mode), required with REQUIRE_API_KEY=1 (401
JSON with `WWW-Authenticate: Bearer`, the lean lane standing aside), counted, and used by the
command-line client. Real web servers on their own migrated SQLite databases, real workers.
The in-process checks (caches, failure limits, redaction): test_authentication.py."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from factorize_app.models import key_digest
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


def test_without_a_key_every_api_request_is_401_json(keyed_url, key_db, warm_worker):
    warm_worker("factorization")
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
def test_unknown_malformed_and_revoked_keys_are_401(mode, keyed_url, open_url, key_db, warm_worker):
    url = keyed_url if mode == "required" else open_url
    warm_worker("factorization")
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


def test_the_client_with_and_without_a_key(keyed_url, key_db, warm_worker):
    warm_worker("factorization")
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
