"""Backup and restore of both stores: `manage.py backup DIR` while the service runs, `manage.py
restore DIR` into a fresh Redis and a fresh SQLite file, and the restored service answers for every
job (finished ones with their results, queued ones run), its admins and its API keys.

Real redis-servers of the test's own (on spare ports), real web servers and workers.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
import requests
from rq.worker import Worker

from factorize_app.jobs import keys
from tests.conftest import PYTHON, ROOT, poll_until_done, service_env, wait_until, web_server
from tests.test_redis_outage import OwnRedis

NO_THROTTLE = {"THROTTLE_SUBMIT": "", "THROTTLE_POLL": ""}


@pytest.fixture
def redis_servers(tmp_path: Path):
    servers = []

    def start() -> OwnRedis:
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        server = OwnRedis(directory)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def manage(*args: str, redis: OwnRedis, database: Path, check: bool = True, **env: str):
    env = service_env(redis.url, DATABASE_URL=f"sqlite:///{database}", JOB_ID_KEY="", **env)
    result = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert not check or result.returncode == 0, result.stderr
    return result


def stack(redis: OwnRedis, database: Path) -> dict[str, str]:
    return {"TEST_REDIS_URL": redis.url, "DATABASE_URL": f"sqlite:///{database}", "JOB_ID_KEY": "", **NO_THROTTLE}


def start_own_worker(start_worker, redis: OwnRedis, env: dict[str, str]):
    """A worker on the test's own Redis, once it has registered there."""
    worker = start_worker("factorization", wait=False, **env)
    wait_until(
        lambda: Worker.count(connection=redis.client()) == 1 or worker.process.poll() is not None,
        timeout=60,
        what="the worker to register",
    )
    assert worker.process.poll() is None, worker.log
    return worker


def post(url: str, number: int, api_key: str) -> requests.Response:
    return requests.post(
        f"{url}/factorize", json={"number": number}, headers={"Authorization": f"Bearer {api_key}"}, timeout=10
    )


def test_backup_while_running_and_restore_bring_back_jobs_results_admins_and_keys(
    tmp_path, redis_servers, start_worker
):
    old_redis, old_db = redis_servers(), tmp_path / "old.sqlite3"
    manage("migrate", "--noinput", "-v0", redis=old_redis, database=old_db)
    manage(
        "ensure_superuser", "--username", "operator", redis=old_redis, database=old_db,
        DJANGO_SUPERUSER_PASSWORD="a long and unguessable operator password",
    )  # fmt: skip
    api_key = manage("create_api_key", "backup-test", redis=old_redis, database=old_db).stdout.strip()
    env = {**stack(old_redis, old_db), "REQUIRE_API_KEY": "1"}

    with web_server(old_redis.url, **env) as url:
        worker = start_own_worker(start_worker, old_redis, env)
        finished = poll_until_done(lambda: post(url, 2**32 + 1, api_key))
        assert finished["status"] == "finished"
        worker.stop()
        queued = post(url, 999983 * 1000003, api_key).json()
        assert queued["status"] == "queued"
        # The copy is taken while the web serves requests.
        backup_dir = tmp_path / "backup"
        result = manage("backup", str(backup_dir), redis=old_redis, database=old_db)
        assert "backed up" in result.stderr
        assert post(url, 2**32 + 1, api_key).status_code == 200  # and it kept serving
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert manifest["redis_keys"] > 0 and manifest["database"] == "database.sqlite3"
    stored_key = old_redis.client().get(keys.JOB_ID_KEY)
    old_redis.stop()

    # A new machine: an empty Redis, no database file.
    new_redis, new_db = redis_servers(), tmp_path / "new.sqlite3"
    result = manage("restore", str(backup_dir), redis=new_redis, database=new_db)
    assert f"restored {manifest['redis_keys']} Redis keys and the database" in result.stderr
    assert new_redis.client().get(keys.JOB_ID_KEY) == stored_key
    # A second restore into the now non-empty Redis is refused without --replace.
    again = manage("restore", str(backup_dir), redis=new_redis, database=new_db, check=False)
    assert again.returncode != 0 and "--replace" in again.stderr
    with sqlite3.connect(new_db) as db:
        assert db.execute("SELECT is_superuser FROM auth_user WHERE username='operator'").fetchone() == (1,)

    env = {**stack(new_redis, new_db), "REQUIRE_API_KEY": "1"}
    with web_server(new_redis.url, **env) as url:
        headers = {"Authorization": f"Bearer {api_key}"}
        assert requests.get(f"{url}/jobs/{finished['job_id']}", timeout=10).status_code == 401  # keys required
        by_id = requests.get(f"{url}/jobs/{finished['job_id']}", headers=headers, timeout=10)
        assert by_id.status_code == 200, by_id.text
        assert by_id.json()["factorization"] == finished["factorization"]
        again = requests.get(f"{url}/jobs/{queued['job_id']}", headers=headers, timeout=10)
        assert again.status_code == 202 and again.json()["status"] == "queued", again.text
        start_own_worker(start_worker, new_redis, env)
        done = poll_until_done(lambda: post(url, 999983 * 1000003, api_key), timeout=60)
        assert done["job_id"] == queued["job_id"]
        assert done["factorization_str"] == "999983^1 1000003^1"
