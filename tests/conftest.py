"""Fixtures for the running service: a clean test Redis database, real workers, a real server.

Everything talks to a real Redis (the database number in REDIS_URL, flushed before each
test; never the whole server) and real `manage.py rqworker` / gunicorn subprocesses.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import requests
from django.conf import settings
from rest_framework.test import APIClient
from rq.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


# The slow tier, left out by `make test-fast` (-m "not slow"); `make test` runs it. Whole modules
# (paths from tests/) that kill processes, cut or fill Redis, fuzz, soak, drive a browser, check the
# deployment files or mostly wait on workers; and single tests elsewhere that took 4 s or more
# (module::test, every parametrization), measured with --durations on the shared machine (2 cores,
# load 3 to 8), and those of 8 s or more in a `make test-fast` run there.
SLOW_MODULES = (
    "browser/",  # a real Chromium
    "test_client_package.py",  # a worker for nearly every test, and pip into a fresh venv
    "test_crash_recovery.py",  # workers killed mid-job
    "test_devserver.py",  # make run's supervisor: workers restarted, environments built
    "test_docker_files.py",  # hadolint and docker compose on every file
    "test_event_stream.py",
    "test_fuzz.py",  # schemathesis over every operation: minutes
    "test_graceful_shutdown.py",  # real servers (granian, gunicorn) stopped with held requests
    "test_full_redis.py",  # Redis filled to its maxmemory
    "test_kubernetes",  # kustomize and schema validation of every manifest
    "test_operator.py",
    "test_redis_outage.py",  # Redis stopped and started again
    "test_request_bodies.py",  # bursts of 1 MB bodies against two servers
    "test_rq_ecosystem.py",  # RQ's own tools and dashboards against real workers
    "test_sentinel.py",  # a Sentinel group and a failover
    "test_soak.py",
    "test_webhooks.py",  # real receivers, retries and restarts
    "test_worker_batches.py",  # workers stopped and killed mid-batch
)
SLOW_TESTS = {
    "test_api_contract.py::test_a_generated_client_submits_a_batch_once_and_a_webhook_filter_as_a_list",
    "test_api_contract.py::test_seed_polling_client_converges",
    "test_api_contract.py::test_sync_mode_bounds_a_handler_by_the_job_timeout",
    "test_api_keys.py::test_create_api_key_prints_only_the_key_and_stores_only_its_digest",
    "test_api_keys.py::test_the_client_with_and_without_a_key",
    "test_api_keys.py::test_unknown_malformed_and_revoked_keys_are_401",
    "test_api_keys.py::test_without_a_key_every_api_request_is_401_json",
    "test_budgets.py::test_one_client_holds_at_most_its_share_of_a_capped_redis",
    "test_budgets.py::test_the_charge_expires_with_the_jobs_records",
    "test_client.py::test_a_failed_job_prints_failed_and_exits_1",
    "test_client.py::test_redis_down_is_retried_a_bounded_number_of_times_then_exits_2",
    "test_client.py::test_the_client_waits_with_prefer_instead_of_polling",
    "test_client.py::test_watch_prints_a_running_jobs_progress",
    "test_client_isolation.py::test_a_client_alone_uses_every_worker_and_gives_one_back_when_another_waits",
    "test_client_isolation.py::test_a_keys_running_cap_keeps_its_jobs_to_one_worker",
    "test_client_isolation.py::test_held_requests_per_client_are_capped_and_health_probes_stay_free",
    "test_deadline.py::test_cancel_after_on_an_idle_worker_is_never_early_nor_late",
    "test_deadline.py::test_cancel_after_right_after_a_delete_is_never_early_nor_late",
    "test_digits.py::test_digits_end_to_end_through_the_queue",
    "test_digits.py::test_the_web_server_and_other_workers_never_load_the_model_packages",
    "test_failure_reports.py::test_a_failed_jobs_traceback_is_shown_to_its_keyed_owner_and_not_to_others",
    "test_failure_reports.py::test_a_finished_job_has_no_traceback_even_for_staff",
    "test_failure_reports.py::test_staff_see_any_failed_jobs_traceback",
    "test_hostile_identity.py::test_a_client_past_its_held_requests_gets_answers_at_once_and_others_are_still_held",
    "test_hostile_input.py::test_every_other_endpoint_and_method",
    "test_hostile_input.py::test_hostile_job_ids_and_prefer_headers",
    "test_hostile_webhook_fields.py::test_hostile_webhook_fields_are_refused_naming_the_field",
    "test_hostile_input.py::test_memory_stays_bounded_under_distinct_padded_bodies",
    "test_job_lifecycle.py::test_a_job_over_its_timeout_fails_cleanly_and_the_worker_goes_on",
    "test_job_lifecycle.py::test_a_number_too_hard_to_factor_in_time_fails_with_timed_out",
    "test_job_lifecycle.py::test_an_expired_then_resubmitted_job_runs_exactly_once",
    "test_job_lifecycle.py::test_load_counts_live_queued_and_running_jobs_only",
    "test_job_lifecycle.py::test_polling_keeps_a_queued_job_alive_and_an_abandoned_one_expires_unrun",
    "test_job_lifecycle.py::test_results_are_cached_and_answer_without_running_again",
    "test_lean_lane.py::test_pending_and_done_answers_match_drf",
    "test_long_poll.py::test_a_hard_number_shows_its_progress_while_it_runs",
    "test_long_poll.py::test_hundreds_of_waiters_do_not_starve_other_requests",
    "test_model_contract.py::test_a_worker_answers_an_example_through_the_queue",
    "test_model_requirements.py::test_a_worker_for_every_queue_leaves_out_the_types_it_cannot_run",
    "test_observability.py::test_metrics_show_queue_gauges_moving_job_durations_and_requests",
    "test_observability.py::test_schema_validates_without_warnings",
    "test_observability.py::test_the_pods_own_address_joins_the_allowed_hosts_and_only_an_address_is_taken",
    "test_security.py::test_each_tls_knob_is_wired",
    "test_startmodel.py::test_a_generated_model_is_served_at_once_and_passes_the_contract",  # a nested pytest
    "test_steering.py::test_a_stop_asked_while_its_worker_is_dead_is_not_lost",
    "test_throttling.py::test_the_lean_lane_counts_in_its_one_round_trip_and_trusts_only_the_configured_header",
    "test_workers.py::test_a_killed_worker_stops_counting_within_three_heartbeats_and_leaves_the_listing",
    "test_workers.py::test_a_worker_for_primes_only_never_takes_a_factorization_job",
    "test_workers.py::test_rqworker_without_queue_names_listens_to_every_task_type_and_delivers_webhooks",
    "test_workers.py::test_setup_runs_once_per_worker_and_jobs_run_warm_in_its_process",
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    matched = set()
    for item in items:
        node = item.nodeid.removeprefix("tests/").split("[", 1)[0]
        if node.startswith(SLOW_MODULES) or node in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
            matched.add(node)
    if config.args_source is pytest.Config.ArgsSource.TESTPATHS:  # the whole suite: no stale names
        stale = SLOW_TESTS - matched
        if stale:
            raise pytest.UsageError(f"tests/conftest.py SLOW_TESTS names tests that do not exist: {sorted(stale)}")


def wait_until(predicate: Callable[[], object], timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The service subprocesses' database (admin users, API keys, sessions): one SQLite file per test
# run, migrated once (service_database), as scripts/start-web.sh migrates before serving.
SERVICE_DATABASE = Path(tempfile.mkdtemp(prefix="factorize-tests-")) / "service.sqlite3"


def service_env(redis_url: str | None = None, **overrides: str) -> dict[str, str]:
    """The environment of a service subprocess; tests.settings reads its Redis from TEST_REDIS_URL."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}"  # the virtualenv's servers
    env["TEST_REDIS_URL"] = redis_url or settings.REDIS_URL
    env["DATABASE_URL"] = f"sqlite:///{SERVICE_DATABASE}"
    env.update(overrides)
    return env


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


@pytest.fixture(autouse=True)
def clean_redis(redis_conn: redis.Redis) -> Iterator[None]:
    redis_conn.flushdb()
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


class WorkerProcess:
    def __init__(self, process: subprocess.Popen, log_path: Path):
        self.process = process
        self.log_path = log_path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_worker(redis_conn: redis.Redis, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start a real `manage.py rqworker` and wait until it has registered (its setup done)."""
    started: list[WorkerProcess] = []

    def start(*queues: str, burst: bool = False, wait: bool = True, **env: str) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(started)}.log"
        args = [PYTHON, "manage.py", "rqworker", *queues]
        if burst:
            args.append("--burst")
        with log_path.open("wb") as log:
            process = subprocess.Popen(args, cwd=ROOT, env=service_env(**env), stdout=log, stderr=subprocess.STDOUT)
        worker = WorkerProcess(process, log_path)
        started.append(worker)
        if wait and not burst:
            wait_until(
                lambda: any(w.pid == process.pid for w in Worker.all(connection=redis_conn))
                or process.poll() is not None,
                timeout=60,
                what="the worker to register",
            )
            assert process.poll() is None, f"worker exited early:\n{worker.log}"
        return worker

    yield start
    for worker in started:
        worker.stop()


@contextmanager
def web_server(redis_url: str | None = None, **env: str) -> Iterator[str]:
    """The production web server (scripts/serve.sh, as `make serve` and the Docker image run it)."""
    port = free_port()
    process = subprocess.Popen(
        ["scripts/serve.sh"],
        cwd=ROOT,
        env=service_env(redis_url, HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="1", **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return requests.get(f"{url}/healthz", timeout=5).status_code == 200
        except requests.RequestException:  # not listening yet, or still importing under load
            assert process.poll() is None, "the web server exited at start"
            return False

    try:
        wait_until(answers, timeout=60, what="the web server to answer")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (a server's worker processes)."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        try:
            pending.extend(int(child) for child in Path(f"/proc/{current}/task/{current}/children").read_text().split())
        except FileNotFoundError:
            continue
    return tree


def server_pid(url: str) -> int:
    """The main process of the server listening on the URL's port."""
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    inode = next(
        fields[9]
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A"  # LISTEN
    )
    holders = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and any(
                link.readlink().name == f"socket:[{inode}]" for link in (proc / "fd").iterdir()
            ):
                holders.append(int(proc.name))
        except (FileNotFoundError, PermissionError):
            continue
    # The server's workers share the listening socket with it: the main one is the holder whose
    # parent holds none.
    return next(pid for pid in holders if _parent(pid) not in holders)


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


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
