"""Fixtures for the running service: a clean test Redis database, real workers, a real server.

Everything talks to a real Redis (the database number in REDIS_URL, flushed before each
test; never the whole server) and real `manage.py rqworker` / gunicorn subprocesses. Workers
are warm (`warm_worker`, shared from test to test) where a test only needs jobs run, or the
test's own (`start_worker`) where it kills, stops or restarts them; under pytest-xdist each
process has a database of its own (tests/settings.py).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import requests
from django.conf import settings
from rest_framework.test import APIClient

# The processes' helpers are shared with bench/; the tests import them from here as before.
from tests.processes import (  # noqa: F401
    PYTHON,
    ROOT,
    free_port,
    process_tree,
    registered,
    rqworker,
    server_pid,
    stop,
    wait_until,
    web_server_with,
)
from tests.support import (  # noqa: F401  (the tests import these from here, as before)
    SERVICE_DATABASE,
    WarmWorkers,
    WorkerProcess,
    launch_worker,
    service_env,
)

# The long tests, left to the full run (`make test-full`, marker `full`): soaks, chaos, fuzzing at
# length, failovers, fill-ups, stress by hundreds or thousands of clients, fresh virtualenvs. `make
# test` runs everything else in minutes; CI runs both. A module (path from tests/), or one test
# (module::test, every parametrization), with why it is long.
FULL_ONLY = {
    "test_soak.py": "200 clients for 60 s",
    "test_fuzz.py": "schemathesis over every operation, minutes",
    "test_full_redis.py": "Redis filled to its maxmemory, ridden out for seconds, a fill-up run",
    "test_redis_outage_bounds.py": "an outage longer than JOB_TTL, a hung Redis",
    "test_redis_outage.py::test_services_ride_out_a_redis_outage": "Redis hung, then down, then back",
    "test_sentinel.py::test_blocking_client_follows_the_sentinels": "a Sentinel group",
    "test_sentinel.py::test_web_and_worker_carry_on_through_a_sentinel_failover": "a Sentinel group and a failover",
    (
        "test_devserver.py::test_a_model_whose_setup_raises_is_restarted_with_backoff"
        "_and_reported_while_another_model_serves"
    ): "make run's supervisor restarting with backoff",
    "test_devserver.py::test_a_change_in_a_models_folder_restarts_its_worker_and_no_other": "make run's supervisor",
    "test_devserver.py::test_requirements_that_conflict_with_the_services_are_refused_in_one_line": "a resolver run",
    "test_devserver.py::test_a_model_conflicting_with_another_model_gets_its_own_environment": "a virtualenv built",
    "test_devserver.py::test_a_worker_that_exits_before_its_setup_is_reported_by_the_supervisor": "a supervisor",
    "test_startmodel.py::test_a_generated_model_is_served_at_once_and_passes_the_contract": "a nested pytest",
    "test_startmodel.py::test_a_generated_model_gets_its_deployment_entries_at_once": "the deployment files rewritten",
    "test_crash_recovery.py::test_twenty_jobs_under_random_kills_all_end_finished_or_failed_with_a_reason": "chaos",
    "test_held_requests.py::test_1400_clients_holding_polls_leave_healthz_answering_within_a_second": "1,400 clients",
    "test_event_stream.py::test_hundreds_of_open_streams_while_polls_and_healthz_answer": "hundreds of streams",
    "test_long_poll.py::test_hundreds_of_waiters_do_not_starve_other_requests": "200 held polls",
    "test_hostile_input.py::test_memory_stays_bounded_under_distinct_padded_bodies": "3,300 bodies of 60 KB",
    "test_request_bodies.py::test_concurrent_large_batches_leave_the_web_process_bounded": "bursts of 1 MB bodies",
    "test_client_package.py::test_pip_install_gives_a_working_factorize_command": "pip into a fresh virtualenv",
    "test_file_outputs.py::test_a_100_mb_file_is_fetched_by_url_while_redis_memory_stays_flat": "100 MB stored, read",
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    matched = set()
    for item in items:
        node = item.nodeid.removeprefix("tests/").split("[", 1)[0]
        module = node.split("::", 1)[0]
        for name in (module, node):
            if name in FULL_ONLY:
                item.add_marker(pytest.mark.full)
                matched.add(name)
    if config.args_source is pytest.Config.ArgsSource.TESTPATHS:  # the whole suite: no stale names
        stale = set(FULL_ONLY) - matched
        if stale:
            raise pytest.UsageError(f"tests/conftest.py FULL_ONLY names tests that do not exist: {sorted(stale)}")


def blocked_reads(redis_conn: redis.Redis) -> int:
    """Requests a web server holds now on the test database: each waits in a blocking XREAD of its
    own (blocked now: flag `b`; an idle pooled connection whose last command was an XREAD is not one)."""
    db = str(redis_conn.connection_pool.connection_kwargs.get("db", 0))
    return sum(
        1
        for c in redis_conn.client_list()
        if c.get("cmd") == "xread" and c.get("db") == db and "b" in c.get("flags", "")
    )


@pytest.fixture(scope="session", autouse=True)
def service_database() -> Path:
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=service_env(), check=True)
    return SERVICE_DATABASE


@pytest.fixture(scope="session")
def redis_conn() -> redis.Redis:
    conn = redis.Redis.from_url(settings.REDIS_URL)
    try:
        conn.ping()
    except redis.exceptions.ConnectionError:
        pytest.exit(f"No Redis answers at {settings.REDIS_URL}: run the tests with `make test`.", returncode=2)
    db = conn.connection_pool.connection_kwargs.get("db", 0)
    if db == 0 and "ALLOW_TEST_DB_0" not in os.environ:
        pytest.exit("Refusing to flush Redis database 0: point TEST_REDIS_URL at a spare database.", returncode=2)
    return conn


@pytest.fixture(scope="session")
def warm_workers(redis_conn: redis.Redis, tmp_path_factory) -> Iterator[WarmWorkers]:
    workers = WarmWorkers(redis_conn, tmp_path_factory.mktemp("warm-workers"))
    yield workers
    workers.stop_all()


@pytest.fixture(autouse=True)
def clean_redis(request, redis_conn: redis.Redis, warm_workers: WarmWorkers) -> Iterator[None]:
    """Every test starts on an empty database; the warm workers it may ask for stay registered."""
    warm_workers.flush_keeping_idle_workers(keep="warm_worker" in request.fixturenames)
    yield


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    """One HTTP session per module, for tests that send many requests to a real server."""
    with requests.Session() as http:
        yield http


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def key(db) -> Callable[..., dict[str, str]]:
    """Makes a fresh API key (name, and its own limits) and answers its header for the in-process client."""
    from factorize_app.models import ApiKey

    def make(name: str = "client", **overrides) -> dict[str, str]:
        _, plaintext = ApiKey.create_key(name=name, **overrides)
        return {"HTTP_AUTHORIZATION": f"Bearer {plaintext}"}

    return make


@pytest.fixture
def start_worker(redis_conn: redis.Redis, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start a fresh `manage.py rqworker` of the test's own (stopped at its end), and wait until it has
    registered: for the tests that kill, stop, crash or restart it, or start it after queueing jobs."""
    started: list[WorkerProcess] = []

    def start(*queues: str, burst: bool = False, wait: bool = True, **env: str) -> WorkerProcess:
        worker = launch_worker(
            redis_conn, tmp_path / f"worker-{len(started)}.log", *queues, burst=burst, wait=wait, **env
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.end()


@pytest.fixture
def warm_worker(warm_workers: WarmWorkers) -> Callable[..., WorkerProcess]:
    """A running, registered, idle worker for these queues and settings, kept warm from one test to
    the next (WarmWorkers): for a test that asks for it before it queues anything and leaves it
    running. A test that kills or stops its worker, or queues jobs before it starts, uses start_worker."""
    return warm_workers.lease


@contextmanager
def web_server(redis_url: str | None = None, **env: str) -> Iterator[str]:
    """The production web server (scripts/serve.sh) on the test Redis database, one process."""
    with web_server_with(service_env(redis_url, WEB_CONCURRENCY="1", **env)) as url:
        yield url


def dead_redis_url() -> str:
    """A Redis URL where nothing listens."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture(scope="session")
def live_url(redis_conn: redis.Redis) -> Iterator[str]:
    """The real web server in async mode, on the test Redis database."""
    with web_server() as url:
        yield url


@pytest.fixture
def sync_server() -> Iterator[str]:
    """The web server in sync mode, pointed at a Redis address where nothing listens."""
    with web_server(dead_redis_url(), EXECUTION_MODE="sync") as url:
        yield url


def poll_until_done(post: Callable[[], object], timeout: float = 30, what: str = "the job to finish") -> dict:
    """POST the same input until the answer says done; the seed's polling, bounded.

    `post` returns a requests or a test-client response."""

    def done():
        body = post().json()
        return body if body["done"] else None

    return wait_until(done, timeout=timeout, interval=0.2, what=what)


def submit(api: APIClient, path: str = "/factorize", **body):
    """POST an input through the in-process test client; the answer must be a status (200/202)."""
    response = api.post(path, body, format="json")
    assert response.status_code in (200, 202), response.content
    return response


def wait_done(api: APIClient, path: str = "/factorize", timeout: float = 30, **body) -> dict:
    """Submit-or-poll an input through the test client until it is done."""
    return poll_until_done(lambda: submit(api, path, **body), timeout=timeout, what=f"{path} {body} to finish")


def queue_named(queues: list[dict], name: str) -> dict:
    """One task type's entry in a GET /queues answer, found by name (the listing is in order of
    name, and a model added under factorize_app/tasks/ may come first)."""
    return next(queue for queue in queues if queue["name"] == name)


def queue_of(api: APIClient, name: str) -> dict:
    """queue_named, through the in-process test client."""
    return queue_named(api.get("/queues").json(), name)
