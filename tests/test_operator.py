"""What an operator sees: a refused start in one line, one warning about insecure defaults, one
log format with RQ's routine lines at DEBUG, admin logins set again on request, and a worker
health check that fails once the worker stops heartbeating. Real processes throughout.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from project.log_format import RoutineMessages, logging_config
from tests.conftest import PYTHON, ROOT, dead_redis_url, free_port, service_env, wait_until

GOOD_KEY = secrets.token_urlsafe(50)
INSECURE = "INSECURE settings"


def run(args: list[str], env: dict[str, str], timeout: float = 60, stdin: str | None = None):
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, input=stdin)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def json_lines(text: str) -> list[dict]:
    """Every line, parsed: a line that is not a JSON object fails the test."""
    parsed = []
    for line in lines(text):
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line: {line!r}")
    return parsed


# --- a refused start -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [PYTHON, "manage.py", "check"],
        [PYTHON, "manage.py", "rqworker", "--burst"],
        [PYTHON, "manage.py", "migrate", "--noinput"],
        ["scripts/serve.sh"],
        ["scripts/start-web.sh"],
    ],
    ids=["check", "worker", "migrate", "serve", "start-web"],
)
def test_a_refused_start_prints_one_line_naming_what_to_set(tmp_path, command):
    env = service_env(
        PRODUCTION="1", DJANGO_SETTINGS_MODULE="project.settings", DATABASE_URL=f"sqlite:///{tmp_path / 'db'}"
    )
    env.pop("SECRET_KEY", None)
    env.update(HOST="127.0.0.1", PORT=str(free_port()))
    result = run(command, env)
    assert result.returncode == 1
    assert lines(result.stdout) == []
    (line,) = lines(result.stderr)
    assert line.startswith("error: ImproperlyConfigured: PRODUCTION is on: SECRET_KEY")
    assert "Set it to a long random value" in line
    assert "Traceback" not in result.stderr


def test_a_bad_log_format_is_refused_by_name():
    result = run([PYTHON, "manage.py", "check"], service_env(LOG_FORMAT="xml"))
    assert result.returncode == 1
    (line,) = lines(result.stderr)
    assert "LOG_FORMAT must be json or text, got 'xml'" in line


# --- the insecure-defaults warning -----------------------------------------------------------


def start_worker_burst(**env: str) -> list[dict]:
    result = run([PYTHON, "manage.py", "rqworker", "--burst", "factorization"], service_env(**env))
    assert result.returncode == 0, result.stderr
    return json_lines(result.stdout + result.stderr)


def test_a_worker_on_the_development_key_warns_in_one_line():
    events = start_worker_burst()
    warnings = [e for e in events if e["level"] == "WARNING"]
    (warning,) = warnings  # the one intended warning, and no other
    assert warning["logger"] == "factorize_app.security"
    assert warning["message"].startswith(INSECURE) and "SECRET_KEY" in warning["message"]
    assert "ALLOWED_HOSTS" not in warning["message"]


def test_a_worker_with_a_real_key_warns_about_nothing_and_about_a_wildcard_host():
    assert not [e for e in start_worker_burst(SECRET_KEY=GOOD_KEY) if e["level"] == "WARNING"]
    (warning,) = [e for e in start_worker_burst(SECRET_KEY=GOOD_KEY, ALLOWED_HOSTS="*") if e["level"] == "WARNING"]
    assert warning["message"].startswith(INSECURE)
    assert "ALLOWED_HOSTS contains '*'" in warning["message"] and "SECRET_KEY" not in warning["message"]


def serve_and_stop(tmp_path: Path, **env: str) -> str:
    """Start scripts/serve.sh, wait until it answers, stop it; everything it wrote."""
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["scripts/serve.sh"],
            cwd=ROOT,
            env=service_env(HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="2", **env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def answers() -> bool:
            assert process.poll() is None, log_path.read_text()
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok
            except requests.RequestException:
                return False

        started = time.monotonic()
        wait_until(answers, timeout=60, what="the web server")
        requests.post(f"http://127.0.0.1:{port}/factorize", json={"number": 12}, timeout=10)
        # The first worker answers; let the other finish loading the app too (as long again), for
        # granian loses a stop signal that reaches a worker still loading, and kills it 10 s later.
        time.sleep(max(1.0, time.monotonic() - started))
    finally:
        process.terminate()
        process.wait(30)
    return log_path.read_text()


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_the_web_server_warns_once_per_start_and_logs_only_json(tmp_path, server):
    """Two server processes, one warning; granian's "threads seems quite high" warning is gone, and
    the servers' own lines are JSON like ours."""
    events = json_lines(serve_and_stop(tmp_path, WEB_SERVER=server, ACCESS_LOG="1"))
    warnings = [e for e in events if e["level"] in ("WARNING", "ERROR", "CRITICAL")]
    assert [w["message"][: len(INSECURE)] for w in warnings] == [INSECURE]
    server_logger = {"granian": "_granian", "gunicorn": "gunicorn.error"}[server]
    assert any(e["logger"].startswith(server_logger) for e in events), "the server's own lines"
    access = {"granian": "granian.access", "gunicorn": "gunicorn.access"}[server]
    assert any(e["logger"] == access and "/factorize" in e["message"] for e in events)


def test_text_format_is_text_everywhere(tmp_path):
    output = serve_and_stop(tmp_path, LOG_FORMAT="text", SECRET_KEY=GOOD_KEY)
    assert lines(output) and not [line for line in lines(output) if line.startswith("{")]
    assert "INFO _granian" in output and "WARNING" not in output


# --- RQ's lines ------------------------------------------------------------------------------


def run_worker_for(seconds: float, tmp_path: Path, **env: str) -> str:
    """A real worker, idle for `seconds` (maintenance every second under tests.settings), then stopped."""
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [PYTHON, "manage.py", "rqworker", "factorization"],
            cwd=ROOT,
            env=service_env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "Listening on" in log_path.read_text(), timeout=60, what="the worker to start")
        time.sleep(seconds)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    return log_path.read_text()


def test_rq_logs_in_our_format_and_its_maintenance_at_debug(tmp_path):
    events = json_lines(run_worker_for(3, tmp_path, SECRET_KEY=GOOD_KEY))
    rq_events = [e for e in events if e["logger"].startswith("rq")]
    assert any("started with PID" in e["message"] for e in rq_events)
    assert not [e for e in rq_events if "cleaning" in e["message"] or "subscribing" in e["message"]]
    assert not [e for e in events if e["level"] != "INFO"]


def test_with_debug_logging_the_routine_lines_are_there_at_debug(tmp_path):
    events = json_lines(run_worker_for(2.5, tmp_path, SECRET_KEY=GOOD_KEY, LOG_LEVEL="DEBUG"))
    cleaning = [e for e in events if "cleaning registries" in e["message"]]
    assert len(cleaning) >= 2, "one per maintenance round"
    assert {e["level"] for e in cleaning} == {"DEBUG"}


def test_routine_filter_demotes_only_the_listed_messages():
    routine = RoutineMessages("INFO")
    message = "Worker %s: cleaning registries for queue: %s"
    record = logging.LogRecord("rq.worker", logging.INFO, "", 0, message, ("w", "q"), None)
    assert routine.filter(record) is False and record.levelname == "DEBUG"
    other = logging.LogRecord("rq.worker", logging.INFO, "", 0, "Worker %s: started with PID %d", (), None)
    assert routine.filter(other) is True and other.levelname == "INFO"
    same_text_elsewhere = logging.LogRecord("myapp", logging.INFO, "", 0, "cleaning registries for queue", (), None)
    assert RoutineMessages("DEBUG").filter(same_text_elsewhere) is True and same_text_elsewhere.levelname == "INFO"
    with pytest.raises(ValueError, match="LOG_LEVEL"):
        logging_config("json", "LOUD")


# --- admin logins ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_env_login_is_created_once_and_reset_on_request(monkeypatch, caplog):
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "admin")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "first-password-1")
    call_command("ensure_superuser")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "second-password-2")
    call_command("ensure_superuser")  # a later start: left as it is, and says how to change it
    assert "--reset" in caplog.records[-1].getMessage()
    admin = get_user_model().objects.get(username="admin")
    assert admin.check_password("first-password-1")

    admin.is_active = False
    admin.save()
    call_command("ensure_superuser", "--reset")
    admin.refresh_from_db()
    assert admin.check_password("second-password-2") and admin.is_active and admin.is_superuser

    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD")
    with pytest.raises(CommandError, match="--reset needs a login and a password"):
        call_command("ensure_superuser", "--reset")


def test_reset_reads_the_password_from_stdin_in_a_real_process(tmp_path):
    env = service_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", DJANGO_SUPERUSER_USERNAME="ops")
    env.pop("DJANGO_SUPERUSER_PASSWORD", None)
    assert run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], env).returncode == 0
    reset = run([PYTHON, "manage.py", "ensure_superuser", "--reset", "--password-stdin"], env, stdin="from stdin 3\n")
    assert reset.returncode == 0, reset.stderr
    (event,) = json_lines(reset.stderr)
    assert event["message"] == "created admin login 'ops'"
    check = (
        "import django; django.setup(); from django.contrib.auth import get_user_model; "
        "print(get_user_model().objects.get(username='ops').check_password('from stdin 3'))"
    )
    assert run([PYTHON, "-c", check], env).stdout.strip() == "True"


# --- the worker health check -----------------------------------------------------------------


def workerhealth(redis_url: str | None = None) -> subprocess.CompletedProcess:
    return run([PYTHON, "manage.py", "workerhealth"], service_env(redis_url))


def test_workerhealth_follows_the_heartbeat_of_this_hosts_worker(start_worker):
    """tests.settings beats every second: a stopped worker is unhealthy after 3 s and healthy
    again once it beats again."""
    assert workerhealth().returncode == 1  # no worker yet
    worker = start_worker("factorization")
    healthy = workerhealth()
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout.startswith("healthy: worker ")
    os.kill(worker.process.pid, signal.SIGSTOP)
    try:
        unhealthy = wait_until(
            lambda: (result := workerhealth()).returncode == 1 and result, timeout=30, what="unhealthy"
        )
        assert "last heartbeat" in unhealthy.stderr and "limit 3 s" in unhealthy.stderr
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)
    wait_until(lambda: workerhealth().returncode == 0, timeout=30, what="healthy again")


def test_workerhealth_judges_only_workers_of_its_own_host(warm_worker):
    warm_worker("factorization")
    other = run([PYTHON, "manage.py", "workerhealth", "--hostname", "another-container"], service_env())
    assert other.returncode == 1 and "no worker of host another-container" in other.stderr


def test_workerhealth_passes_while_redis_is_down():
    """The worker rides out an outage by itself; a restart would not bring Redis back."""
    result = workerhealth(dead_redis_url())
    assert result.returncode == 0 and "Redis unavailable" in result.stdout
