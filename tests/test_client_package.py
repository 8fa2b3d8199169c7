"""The factorize-client package (client/): its Python API and its `factorize` command against the
real web server and real workers, and `pip install ./client` into a fresh virtualenv.

The API is used in this process from the checkout's copy (client/ on sys.path); the command runs
as a subprocess, as `python -m factorize_client` with that copy, and as the installed `factorize`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from tests.conftest import ROOT, wait_until, web_server

CLIENT_DIR = ROOT / "client"
sys.path.insert(0, str(CLIENT_DIR))

from factorize_client import Client, JobFailed, OutOfTime, ServiceError  # noqa: E402 (the checkout's copy)

SEED = "2^3 3^1 73^1 233^1"


def factorize(url: str, *args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    """The `factorize` command from the checkout's copy, with piped streams."""
    env = {**os.environ, "PYTHONPATH": str(CLIENT_DIR)}
    env.pop("FACTORIZE_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "factorize_client", "--url", url, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tempfile.gettempdir(),  # not the repository: only the package itself is importable
    )


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def digits_example() -> dict:
    from factorize_app.tasks.digits import TASK_TYPE

    return TASK_TYPE.examples[0]


# --- The Python API -----------------------------------------------------------------------------


def test_types_come_from_the_service(live_url):
    types = Client(live_url).types()
    assert types["factorization"].path == "/factorize"
    assert types["digits"].path == "/digits"
    assert "pixels" in types["digits"].input_schema["properties"]
    assert "number" in types["factorization"].input_schema["properties"]


def test_submit_and_wait_for_the_result_by_name_or_path(live_url, warm_worker):
    warm_worker("factorization")
    client = Client(live_url)
    job = client.submit("factorization", {"number": 408216})
    assert job.id and job.id.startswith("factorization-")
    assert job.result(timeout=60)["factorization_str"] == SEED
    assert client.submit("/factorize", {"number": 408216}).id == job.id  # the same input is the same job
    assert client.submit("factorize", {"number": 77}).result(timeout=60)["factorization_str"] == "7^1 11^1"
    assert job.status()["status"] == "finished"


def test_result_raises_on_a_failed_job_and_on_a_timeout(live_url, start_worker):
    client = Client(live_url)
    waiting = client.submit("factorization", {"number": 1000003})
    started = time.monotonic()
    with pytest.raises(OutOfTime, match="not done after 2 s"):
        waiting.result(timeout=2)  # no worker yet
    assert time.monotonic() - started < 10
    start_worker("failing")
    failed = client.submit("failing", {"tag": "x"})
    with pytest.raises(JobFailed) as raised:
        failed.result(timeout=60)
    assert raised.value.status == "failed" and raised.value.error
    invalid = client.submit("factorization", {"number": 1})
    assert invalid.id is None and invalid.done
    with pytest.raises(JobFailed, match="invalid"):
        invalid.result()
    with pytest.raises(Exception, match="no task type 'nope'"):
        client.submit("nope", {})


def test_events_stream_a_job_from_queued_to_finished(live_url, start_worker):
    job = Client(live_url).submit("factorization", {"number": 408216})
    seen = []
    for event in job.events():
        seen.append(event)
        if len(seen) == 1:
            assert event["status"] == "queued" and not event["done"]
            start_worker("factorization")  # the stream was open before any worker took the job
    assert seen[-1]["status"] == "finished" and seen[-1]["factorization_str"] == SEED
    assert [event["job_id"] for event in seen] == [job.id] * len(seen)
    ids = [event["id"] for event in seen[1:]]  # the first, the state when the stream opened, may have none
    assert all(ids) and len(set(ids)) == len(ids)
    assert "started" in [event["status"] for event in seen[1:-1]] or len(seen) == 2  # a fast job may skip it
    assert [event for event in job.events()][-1]["status"] == "finished"  # a done job: its end at once


def test_events_are_polled_when_the_server_can_open_no_more_streams(start_worker):
    with web_server(EVENT_STREAMS_MAX="1") as url:
        client = Client(url)
        first, second = (client.submit("factorization", {"number": n}) for n in (408216, 77))
        streamed = first.events()
        assert next(streamed)["status"] == "queued"  # holds the server's one stream
        polled = second.events()
        assert next(polled)["status"] == "queued"  # its stream refused (503): polled instead
        start_worker("factorization")
        polled_events, streamed_events = list(polled), list(streamed)
    assert polled_events[-1]["factorization_str"] == "7^1 11^1" and polled_events[-1]["id"] is None
    assert streamed_events[-1]["factorization_str"] == SEED and streamed_events[-1]["id"] is not None


def test_cancel_a_queued_job(live_url):
    client = Client(live_url)
    job = client.submit("factorization", {"number": 1000033})  # no worker: it stays queued
    assert job.cancel() is None  # 204: canceled
    assert job.status()["status"] == "canceled"
    with pytest.raises(JobFailed, match="canceled"):
        job.result(timeout=10)
    with pytest.raises(ServiceError) as refused:
        job.cancel()
    assert refused.value.status == 409


def test_cancel_stops_a_running_job(live_url, warm_worker):
    warm_worker("factorization")
    hard = 671998030559713968361666935769 * 282174488599599500573849980909  # minutes for sympy
    job = Client(live_url).submit("factorization", {"number": hard})
    wait_until(lambda: job.status()["status"] == "started", timeout=30, what="the job to start")
    stopping = job.cancel()
    assert stopping is not None and stopping["job_id"] == job.id  # 202: its worker is asked to stop it
    with pytest.raises(JobFailed) as raised:
        job.result(timeout=30)
    assert raised.value.status == "canceled"


def test_submit_many_and_run_many(live_url, start_worker, tmp_path):
    client = Client(live_url)
    jobs = client.submit_many("factorization", [{"number": 408216}, {"number": "abc"}, {"number": 77}])
    assert [job.last["status"] for job in jobs] == ["queued", "invalid", "queued"]
    start_worker("factorization")
    start_worker("digits", MODEL_DIR=str(tmp_path))
    assert jobs[0].result(timeout=60)["factorization_str"] == SEED
    assert jobs[2].result(timeout=60)["factorization_str"] == "7^1 11^1"
    done = []
    bodies = client.run_many(
        "digits", [digits_example()] * 3 + [{"pixels": [0] * 64}], on_done=lambda i, b: done.append(i)
    )
    assert sorted(done) == [0, 1, 2, 3]
    assert all(body["status"] == "finished" for body in bodies)
    assert bodies[0]["digit"] == 0 and len(bodies[0]["probabilities"]) == 10


# --- The command --------------------------------------------------------------------------------


def test_the_command_takes_json_for_any_type(live_url, start_worker, tmp_path):
    start_worker("factorization")
    start_worker("digits", MODEL_DIR=str(tmp_path))
    one = factorize(live_url, "--type", "digits", "--json", json.dumps(digits_example()))
    assert one.returncode == 0, one.stderr
    (line,) = json_lines(one.stdout)
    assert line["status"] == "finished" and line["digit"] == 0 and "load" not in line
    assert "1 jobs in" in one.stderr and "1 finished, 0 failed, 0 invalid" in one.stderr

    inputs = [digits_example(), {"pixels": [99] * 64}, digits_example()]
    piped = factorize(live_url, "--type", "digits", stdin="\n".join(json.dumps(i) for i in inputs) + "\n")
    assert piped.returncode == 1, piped.stderr  # one invalid input
    lines = json_lines(piped.stdout)
    assert [line["status"] for line in lines] == ["finished", "invalid", "finished"]  # input order
    assert "pixels" in lines[1]["errors"]

    numbers = factorize(live_url, "--type", "factorization", stdin='{"number": 408216}\n{"number": "1000003"}\n')
    assert numbers.returncode == 0, numbers.stderr
    assert [line["factorization_str"] for line in json_lines(numbers.stdout)] == [SEED, "1000003^1"]

    positional = factorize(live_url, "--type", "factorization", "408216", "77")
    assert positional.returncode == 0, positional.stderr
    assert sorted(positional.stdout.splitlines()) == sorted([f"408216 = {SEED}", "77 = 7^1 11^1"])

    bad = factorize(live_url, "--type", "digits", "--json", "[1, 2]")
    assert bad.returncode == 2 and "a JSON object is wanted" in bad.stderr
    unknown = factorize(live_url, "--type", "nope", "--json", "{}")
    assert unknown.returncode == 2 and "no task type 'nope'" in unknown.stderr and "digits" in unknown.stderr


def test_the_command_lists_types_follows_and_cancels_jobs(live_url, start_worker):
    listed = factorize(live_url, "--types")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^factorization\t/factorize\t", listed.stdout, re.M)
    job = Client(live_url).submit("factorization", {"number": 408216})
    canceled = factorize(live_url, "--cancel", job.id)
    assert canceled.returncode == 0 and canceled.stdout.strip() == f"{job.id}: canceled", canceled
    again = factorize(live_url, "--cancel", job.id)
    assert again.returncode == 1 and "409" in again.stderr
    start_worker("factorization")
    other = Client(live_url).submit("factorization", {"number": 1000003})
    followed = factorize(live_url, "--job", other.id)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines() == ["1000003 = 1000003^1"]
    watched = factorize(live_url, "--watch", *map(str, range(1000, 1020)), "abc")  # more jobs than streams
    assert watched.returncode == 1, watched.stderr  # one invalid
    assert len(watched.stdout.splitlines()) == 21 and "abc invalid: " in watched.stdout
    assert "21 numbers in" in watched.stderr and "20 finished, 0 failed, 1 invalid" in watched.stderr


def test_the_command_says_when_it_waits_on_the_submit_limit(warm_worker):
    with web_server(THROTTLE_SUBMIT="4/second") as url:
        warm_worker("factorization")
        started = time.monotonic()
        result = factorize(url, *map(str, range(100, 116)))
        elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 16
    waits = [line for line in result.stderr.splitlines() if line.startswith("waiting ")]
    assert waits, result.stderr
    assert all(re.fullmatch(r"waiting [0-9.]+ s: the server's submit limit \(429\)", line) for line in waits), waits
    assert len(waits) <= elapsed + 1  # one line per wait, not one per request that met the limit


def test_batches_over_the_servers_max_batch_are_split(warm_worker):
    with web_server(MAX_BATCH="2") as url:
        warm_worker("factorization")
        jobs = Client(url).submit_many("factorization", [{"number": n} for n in range(100, 105)])
        assert [job.last["number"] for job in jobs] == list(range(100, 105))
        result = factorize(url, *map(str, range(200, 240)))
    assert result.returncode == 0, result.stderr
    assert sorted(int(line.split(" = ")[0]) for line in result.stdout.splitlines()) == list(range(200, 240))


# --- Installing it ------------------------------------------------------------------------------


def test_pip_install_gives_a_working_factorize_command(tmp_path, live_url, start_worker):
    """`pip install ./client` into a fresh virtualenv: only requests comes along, and the command
    it installs factors a number on the live service."""
    source = tmp_path / "client"
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    helped = subprocess.run([venv / "bin" / "factorize", "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
    assert "--type" in helped.stdout and "--json" in helped.stdout and "--watch" in helped.stdout
    installed = subprocess.run(
        [venv / "bin" / "pip", "list", "--format=freeze"], capture_output=True, text=True, timeout=60
    ).stdout.lower()
    assert "factorize-client==" in installed and "requests==" in installed
    assert "django" not in installed
    start_worker("factorization")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "FACTORIZE_TOKEN")}
    factored = subprocess.run(
        [venv / "bin" / "factorize", "--url", live_url, "408216"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert factored.returncode == 0, factored.stderr
    assert factored.stdout.splitlines() == [f"408216 = {SEED}"]
