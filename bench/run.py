"""`make bench`: the service against the peers a user would pick, side by side in one run.

Starts the service as in production (scripts/serve.sh, real `manage.py rqworker` processes) on
its own Redis database number, and the peers on another, runs every scenario, and writes the
medians (and their ratios to the peer) to bench/RESULTS.md. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
TASK_TYPES = ",".join(
    [
        "factorize_app.tasks.factorization.TASK_TYPE",
        "factorize_app.tasks.primes.TASK_TYPE",
        "factorize_app.tasks.digits.TASK_TYPE",
        "bench.task_types.INCR",
        "bench.task_types.NAP",
        "bench.task_types.DIGITS_ONE_BY_ONE",
    ]
)
SERVICE_ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "PYTHONPATH": str(ROOT),
    "DJANGO_SETTINGS_MODULE": "project.settings",
    "REDIS_URL": REDIS_URL,
    "TASK_TYPES": TASK_TYPES,
    "JOB_TTL": "900",  # the scale scenario queues 100,000 jobs before it measures
    "LOG_LEVEL": "WARNING",
    # Every request comes from 127.0.0.1: rates high enough never to bite, but still counted.
    "THROTTLE_SUBMIT": "1000000/second",
    "THROTTLE_POLL": "1000000/second",
    # The scenarios queue up to 100,000 jobs of one client: no cap on a client's queued jobs.
    "MAX_QUEUED_PER_CLIENT": "0",
    # The clients' API keys (fairness, the hot path with a key) live in the bench's own database.
    "DATABASE_URL": f"sqlite:///{ROOT / '.run' / 'bench.sqlite3'}",
}
POST_LUA = 'wrk.method = "POST"\nwrk.body = \'{"number": 408216}\'\nwrk.headers["Content-Type"] = "application/json"\n'
CACHED_KEY = "bench:cached"
COUNTER = "bench:counter"

conn = redis.Redis.from_url(REDIS_URL)
results: dict[str, object] = {}


# --- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(args: list[str], env: dict | None = None, ready: Callable[[], bool] | None = None) -> Iterator[None]:
    process = subprocess.Popen(
        args, cwd=ROOT, env=env or SERVICE_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        if ready is not None:
            wait_for(ready, 60, f"{args[0]} to be ready", process)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, process=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return requests.get(url, timeout=2).status_code < 500
        except requests.RequestException:
            return False

    return check


def service_server(port: int, **env: str):
    return running(
        ["scripts/serve.sh"],
        {**SERVICE_ENV, "HOST": "127.0.0.1", "PORT": str(port), **env},
        answers(f"http://127.0.0.1:{port}/healthz"),
    )


def workers(count: int, *queues: str, burst: bool = True, **env: str) -> list[subprocess.Popen]:
    args = [str(BIN / "python"), "manage.py", "rqworker", *queues, *(["--burst"] if burst else [])]
    return [subprocess.Popen(args, cwd=ROOT, env={**SERVICE_ENV, **env}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
            for _ in range(count)]  # fmt: skip


def warm_worker(queue: str, timeout: float = 120, **env: str) -> list[subprocess.Popen]:
    """One worker for `queue`, returned once it has registered (its model loaded)."""
    procs = workers(1, queue, burst=False, **env)
    wait_for(lambda: int(conn.scard(f"rq:workers:{queue}")) >= 1, timeout, f"the {queue} worker")
    return procs


def finish(processes: list[subprocess.Popen]) -> None:
    """Wait for burst workers to empty their queues and exit."""
    for process in processes:
        process.wait(600)


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        process.wait(60)


def django_setup() -> None:
    os.environ.update({k: v for k, v in SERVICE_ENV.items() if k != "PATH"})
    sys.path.insert(0, str(ROOT))
    (ROOT / ".run").mkdir(exist_ok=True)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def api_key(name: str) -> dict[str, str]:
    """The Authorization header of a new API key (invented tokens are refused: a client is a key)."""
    from factorize_app.models import ApiKey

    return {"Authorization": f"Bearer {ApiKey.create_key(name=name)[1]}"}


# --- measurement helpers -------------------------------------------------------------------


def wrk(url: str, seconds: int, connections: int = 32, headers: dict[str, str] | None = None) -> dict[str, float]:
    script = ROOT / ".run" / "bench-post.lua"
    script.parent.mkdir(exist_ok=True)
    script.write_text(POST_LUA + "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in (headers or {}).items()))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    def latency(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency("50%"),
        "p99": latency("99%"),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
    }


def measured(url: str, seconds: int, runs: int, headers: dict[str, str] | None = None) -> dict[str, float]:
    """The median of `runs` wrk runs, after a 2-second run not counted: a server just started may
    still be loading its second process, and its caches (keys, bodies, connections) are cold."""
    wrk(url, 2, headers=headers)
    return median_of([wrk(url, seconds, headers=headers) for _ in range(runs)])


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def ratio(ours: float, peer: float) -> str:
    return f"{ours / peer:.2f}×" if peer else "n/a"


# --- scenarios -----------------------------------------------------------------------------


def hot_path(runs: int, seconds: int) -> None:
    """req/s and latency of POST {"number": 408216} answered from a cached result, at 32 connections."""
    conn.flushdb()
    ours = {}
    keyed = api_key("hot path")
    for access_log in ("1", "0"):
        port = free_port()
        with service_server(port, ACCESS_LOG=access_log):
            url = f"http://127.0.0.1:{port}/factorize"
            if not conn.exists(CACHED_KEY):
                requests.post(url, json={"number": 408216}, timeout=10)
                finish(workers(1, "factorization"))
                done = requests.post(url, json={"number": 408216}, timeout=10)
                assert done.status_code == 200, done.text
                conn.set(CACHED_KEY, done.content)
            ours[access_log] = measured(url, seconds, runs)
            if access_log == "0":  # the same poll with an API key: its cost is the key's check
                assert requests.post(url, json={"number": 408216}, headers=keyed, timeout=10).status_code == 200
                ours["key"] = measured(url, seconds, runs, headers=keyed)
    port = free_port()
    peer_cmd = [str(BIN / "uvicorn"), "bench.peers.fastapi_app:app", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "2", "--no-access-log", "--log-level", "warning"]  # fmt: skip
    with running(peer_cmd, ready=answers(f"http://127.0.0.1:{port}/docs")):
        peer = measured(f"http://127.0.0.1:{port}/factorize", seconds, runs)
    results["hot_path"] = {"ours": ours["0"], "ours_logged": ours["1"], "ours_key": ours["key"], "fastapi": peer}


def drain_rate(count: int, processes: int, enqueue: Callable[[int], None], start: Callable[[int], list]) -> float:
    conn.flushdb()
    enqueue(count)
    started = time.monotonic()
    procs = start(processes)
    try:
        wait_for(lambda: int(conn.get(COUNTER) or 0) >= count, 600, f"{count} jobs to drain")
        return count / (time.monotonic() - started)
    finally:
        stop(procs)


def worker_throughput(runs: int, count: int) -> None:
    """Trivial jobs/s (one INCR each), enqueued first, then drained; worker start-up included."""
    from factorize_app import jobs
    from factorize_app.tasks import get_task_type

    incr_type = get_task_type("bench_incr")

    def enqueue_ours(n: int) -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: jobs.submit(task_type=incr_type, data={"i": i}), range(n)))

    def enqueue_rq(n: int) -> None:
        from rq import Queue

        queue = Queue("bench_rq", connection=conn)
        with conn.pipeline() as pipe:
            for _ in range(n):
                queue.enqueue("bench.peers.rq_job.incr", pipeline=pipe, result_ttl=600)
            pipe.execute()

    def enqueue_celery(n: int) -> None:
        from bench.peers.celery_app import incr

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: incr.delay(), range(n)))

    def enqueue_dramatiq(n: int) -> None:
        from bench.peers.dramatiq_app import incr

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: incr.send(), range(n)))

    def start_rq(p: int):
        args = [str(BIN / "rq"), "worker", "bench_rq", "--burst", "-w", "rq.worker.SimpleWorker", "--url", REDIS_URL,
                "--quiet"]  # fmt: skip
        return [subprocess.Popen(args, cwd=ROOT, env=SERVICE_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for _ in range(p)]  # fmt: skip

    def start_celery(p: int):
        pool = ["--pool", "solo"] if p == 1 else ["--pool", "prefork", "--concurrency", str(p)]
        args = [str(BIN / "celery"), "-A", "bench.peers.celery_app", "worker", *pool, "--loglevel", "WARNING"]
        return [subprocess.Popen(args, cwd=ROOT, env=SERVICE_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]

    def start_dramatiq(p: int):
        args = [str(BIN / "dramatiq"), "bench.peers.dramatiq_app", "--processes", str(p)]
        return [subprocess.Popen(args, cwd=ROOT, env=SERVICE_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]

    engines = {
        "ours": (enqueue_ours, lambda p: workers(p, "bench_incr")),
        "rq_simpleworker": (enqueue_rq, start_rq),
        "celery": (enqueue_celery, start_celery),
        "dramatiq": (enqueue_dramatiq, start_dramatiq),
    }
    table = {}
    for name, (enqueue, start) in engines.items():
        for processes in (1, 2):
            rates = [drain_rate(count, processes, enqueue, start) for _ in range(runs)]
            table[(name, processes)] = statistics.median(rates)
            print(f"  workers {name} x{processes}: {table[(name, processes)]:.0f} jobs/s", flush=True)
    results["workers"] = table


def end_to_end(count: int) -> None:
    """Distinct numbers submitted over HTTP and polled (re-posted) until done, 2 workers."""
    conn.flushdb()
    port = free_port()
    numbers = list(range(10**6, 10**6 + count))
    with service_server(port):
        url = f"http://127.0.0.1:{port}/factorize"
        procs = workers(2, "factorization", burst=False)
        local = threading.local()

        def session() -> requests.Session:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            return local.session

        def until_done(n: int) -> None:
            for _ in range(1000):
                if session().post(url, json={"number": n}, timeout=30).json()["done"]:
                    return
                time.sleep(0.05)
            raise RuntimeError(f"{n} never finished")

        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(until_done, numbers))
        elapsed = time.monotonic() - started

        # The same count of other numbers through the batch endpoint: chunks of 500, each re-posted
        # with `Prefer: wait` until all its items are done (4 client threads).
        def batch_until_done(chunk: list[int]) -> None:
            for _ in range(100):
                answer = session().post(f"{url}/batch", json={"numbers": chunk}, headers={"Prefer": "wait=30"},
                                        timeout=60).json()  # fmt: skip
                if all(item["done"] for item in answer["results"]):
                    return
            raise RuntimeError("a batch never finished")

        batch_numbers = [2 * 10**6 + i for i in range(count)]
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(batch_until_done, [batch_numbers[i : i + 500] for i in range(0, count, 500)]))
        batch_elapsed = time.monotonic() - started
        stop(procs)
    results["end_to_end"] = {
        "count": count,
        "seconds": elapsed,
        "jobs_per_s": count / elapsed,
        "batch_seconds": batch_elapsed,
        "batch_jobs_per_s": count / batch_elapsed,
    }


def fairness(runs: int) -> None:
    """Client B's wait for its one 20 ms job, submitted just after client A's 1,000, one worker."""
    waits: dict[str, list[float]] = {"fair": [], "fifo": []}
    for order in ("fair", "fifo"):
        for _ in range(runs):
            conn.flushdb()
            port = free_port()
            with service_server(port, QUEUE_ORDER=order):
                url = f"http://127.0.0.1:{port}/bench-nap"
                procs = warm_worker("bench_nap", QUEUE_ORDER=order)
                a_items = {"items": [{"tag": f"a{i}"} for i in range(1000)]}
                requests.post(f"{url}/batch", json=a_items, headers=api_key("client a"), timeout=60)
                started = time.perf_counter()
                answer = requests.post(url, json={"tag": "b"}, timeout=120,
                                       headers={**api_key("client b"), "Prefer": "wait=60"}).json()  # fmt: skip
                assert answer["done"], answer
                waits[order].append(time.perf_counter() - started)
                stop(procs)
    results["fairness"] = {order: statistics.median(values) for order, values in waits.items()}


def fairness_varied(runs: int, count: int = 300) -> None:
    """Client B's one job behind client A's `count` jobs of varied cost (products of two random
    8-digit primes, factored in 1-40 ms), one worker: B's wait against A's total."""
    from sympy import nextprime

    rng = random.Random(7)

    def prime() -> int:
        return nextprime(rng.randrange(10**7, 10**8 - 10**4))

    waits, totals = [], []
    for run in range(runs):
        conn.flushdb()
        numbers = [prime() * prime() for _ in range(count)]
        port = free_port()
        a, b = api_key("client a"), api_key("client b")
        with service_server(port):
            url = f"http://127.0.0.1:{port}/factorize"
            procs = warm_worker("factorization")
            started = time.perf_counter()
            requests.post(f"{url}/batch", json={"numbers": numbers}, headers=a, timeout=60)
            b_started = time.perf_counter()
            answer = requests.post(url, json={"number": 408216 + run}, timeout=120,
                                   headers={**b, "Prefer": "wait=60"}).json()  # fmt: skip
            assert answer["done"], answer
            waits.append(time.perf_counter() - b_started)
            done = requests.post(f"{url}/batch", json={"numbers": numbers}, timeout=300,
                                 headers={**a, "Prefer": "wait=60"}).json()  # fmt: skip
            assert all(item["done"] for item in done["results"])
            totals.append(time.perf_counter() - started)
            stop(procs)
    results["fairness_varied"] = {"count": count, "b_wait": statistics.median(waits), "a_total": statistics.median(totals)}


def digits(count: int, samples: int) -> None:
    """The digits model through one warm worker, with its batch handler and one image per call
    (the same classifier), and a single job's submit-to-seen latency on an idle system."""
    import numpy as np

    from factorize_app import jobs
    from factorize_app.tasks import get_task_type
    from factorize_app.tasks.digits.model import held_out_split

    images = held_out_split()[1]
    rng = np.random.default_rng(3)
    items = [
        {"pixels": [int(v) for v in np.clip(images[i % len(images)] + rng.integers(-1, 2, 64), 0, 16)]}
        for i in range(count)
    ]
    rates = {}
    for name in ("digits", "bench_digits_single"):
        conn.flushdb()
        task_type = get_task_type(name)
        procs = warm_worker(name)
        started = time.monotonic()
        states = jobs.submit_many(task_type=task_type, items=items, wait=120)
        rates[name] = count / (time.monotonic() - started)
        assert all(state.done for state in states)
        stop(procs)
    conn.flushdb()
    port = free_port()
    with service_server(port):
        url = f"http://127.0.0.1:{port}/digits"
        procs = warm_worker("digits")
        seen = []
        for item in items[:samples]:
            started = time.perf_counter()
            body = requests.post(url, json=item, headers={"Prefer": "wait=10"}, timeout=30).json()
            assert body["done"], body
            seen.append(time.perf_counter() - started)
        stop(procs)
    results["digits"] = {
        "count": count,
        "batched": rates["digits"],
        "single": rates["bench_digits_single"],
        "latency_p50_ms": statistics.median(seen) * 1000,
    }


def stop_latency(samples: int) -> None:
    """DELETE of a running job to `canceled` seen by its poller (median), one warm worker; each
    job a hard semiprime that would run for seconds."""
    from sympy import nextprime

    conn.flushdb()
    port = free_port()
    with service_server(port):
        url = f"http://127.0.0.1:{port}"
        procs = warm_worker("factorization")
        seen = []
        for i in range(samples):
            number = nextprime(10**19 + 10**6 * i) * nextprime(3 * 10**20 + 10**6 * i)
            job_id = requests.post(f"{url}/factorize", json={"number": number}, timeout=30).json()["job_id"]
            wait_for(lambda job_id=job_id: requests.get(f"{url}/jobs/{job_id}", timeout=30).json()["status"] == "started",
                     60, "the job to start")  # fmt: skip
            started = time.perf_counter()
            assert requests.delete(f"{url}/jobs/{job_id}", timeout=30).status_code == 202
            while requests.get(f"{url}/jobs/{job_id}", timeout=30).json()["status"] != "canceled":
                time.sleep(0.005)
            seen.append(time.perf_counter() - started)
        stop(procs)
    results["stop_latency"] = {"samples": samples, "p50_ms": statistics.median(seen) * 1000, "max_ms": max(seen) * 1000}


def batch_polls(runs: int, count: int = 1000) -> None:
    """Polls of `count` finished jobs: one POST per item (16 threads) against one batch POST."""
    conn.flushdb()
    port = free_port()
    numbers = list(range(3 * 10**6, 3 * 10**6 + count))
    with service_server(port):
        url = f"http://127.0.0.1:{port}/factorize"
        procs = workers(2, "factorization", burst=False)
        requests.post(f"{url}/batch", json={"numbers": numbers}, headers={"Prefer": "wait=60"}, timeout=90)
        stop(procs)
        local = threading.local()

        def single(n: int) -> None:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            assert local.session.post(url, json={"number": n}, timeout=30).json()["done"]

        singles, batches = [], []
        for _ in range(runs):
            started = time.monotonic()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(single, numbers))
            singles.append(count / (time.monotonic() - started))
            started = time.monotonic()
            answer = requests.post(f"{url}/batch", json={"numbers": numbers}, timeout=60).json()
            assert all(item["done"] for item in answer["results"])
            batches.append(count / (time.monotonic() - started))
    results["batch_polls"] = {"count": count, "single": statistics.median(singles), "batch": statistics.median(batches)}


def latency(samples: int) -> None:
    """Submit-to-result-seen on an idle system: `Prefer: wait` versus the seed's 1-second polling."""
    conn.flushdb()
    port = free_port()
    with service_server(port):
        url = f"http://127.0.0.1:{port}/factorize"
        procs = warm_worker("factorization")
        http = requests.Session()  # a client's kept-alive connection, as any client polling would keep

        def with_wait(n: int) -> float:
            started = time.perf_counter()
            body = http.post(url, json={"number": n}, headers={"Prefer": "wait=10"}, timeout=30).json()
            assert body["done"], body
            return time.perf_counter() - started

        def with_polling(n: int) -> float:
            started = time.perf_counter()
            while not http.post(url, json={"number": n}, timeout=30).json()["done"]:
                time.sleep(1)
            return time.perf_counter() - started

        def with_stream(n: int) -> float:
            started = time.perf_counter()
            job_id = http.post(url, json={"number": n}, timeout=30).json()["job_id"]
            stream = http.get(f"http://127.0.0.1:{port}/jobs/{job_id}", headers={"Accept": "text/event-stream"},
                                  stream=True, timeout=30)  # fmt: skip
            for line in stream.iter_lines():
                if line.startswith(b"data: ") and json.loads(line[6:])["done"]:
                    break
            stream.close()
            return time.perf_counter() - started

        waits = [with_wait(2 * 10**6 + i) for i in range(samples)]
        streamed = [with_stream(4 * 10**6 + i) for i in range(samples)]
        polls = [with_polling(3 * 10**6 + i) for i in range(samples)]
        stop(procs)
    results["latency"] = {
        "wait_p50_ms": statistics.median(waits) * 1000,
        "stream_p50_ms": statistics.median(streamed) * 1000,
        "poll_p50_ms": statistics.median(polls) * 1000,
    }


def scale(samples: int, deep: int) -> None:
    """Time of `load` (GET /factorize) and GET /queues with 10 and with 100,000 jobs queued."""
    from factorize_app import jobs
    from factorize_app.tasks import get_task_type

    factorization = get_task_type("factorization")
    conn.flushdb()
    port = free_port()
    timings = {}
    with service_server(port):
        base = f"http://127.0.0.1:{port}"
        session = requests.Session()
        queued = 0
        for depth in (10, deep):
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: jobs.submit(task_type=factorization, data={"number": 10**7 + i}),
                              range(queued, depth)))  # fmt: skip
            queued = depth
            for path in ("/factorize", "/queues"):
                durations = []
                for _ in range(samples):
                    started = time.perf_counter()
                    session.get(base + path, timeout=30).raise_for_status()
                    durations.append(time.perf_counter() - started)
                timings[(path, depth)] = statistics.median(durations) * 1000
    results["scale"] = {"deep": deep, "timings": timings}


def warm_model(jobs_count: int) -> None:
    """`jobs_count` primes jobs on a warm worker, against that many `setup()`s; also the cold
    figure, a worker started for them (start-up and its one setup included)."""
    from factorize_app import jobs
    from factorize_app.tasks import get_task_type
    from factorize_app.tasks.primes.model import PrimeCounter

    primes = get_task_type("primes")
    conn.flushdb()
    for i in range(jobs_count):
        jobs.submit(task_type=primes, data={"n": 1000 + i})
    started = time.monotonic()
    finish(workers(1, "primes"))
    cold = time.monotonic() - started
    conn.flushdb()
    procs = warm_worker("primes")
    started = time.monotonic()
    states = jobs.submit_many(task_type=primes, items=[{"n": 2000 + i} for i in range(jobs_count)], wait=60)
    warm = time.monotonic() - started
    assert all(state.done for state in states)
    stop(procs)
    setups = []
    for _ in range(3):
        started = time.monotonic()
        PrimeCounter().setup()
        setups.append(time.monotonic() - started)
    results["warm"] = {"jobs": jobs_count, "warm_s": warm, "worker_s": cold, "setup_s": statistics.median(setups)}


# --- report --------------------------------------------------------------------------------


def process_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (a server's worker processes)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(FileNotFoundError):
            status = Path(f"/proc/{current}/status").read_text()
            total += int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024
            pending.extend(int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split())
    return total


def listening_pid(port: int) -> int:
    """The main process of the server on `port` (the one whose parent is not a holder too)."""
    inode = next(fields[9] for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
                 if fields[1].endswith(f":{port:04X}") and fields[3] == "0A")  # fmt: skip
    holders = set()
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if proc.name.isdigit() and any(os.readlink(fd) == f"socket:[{inode}]" for fd in (proc / "fd").iterdir()):
                holders.add(int(proc.name))
    parent = lambda pid: int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # noqa: E731
    return next(pid for pid in holders if parent(pid) not in holders)


def streams(runs: int, seconds: int, count: int = 1000) -> None:
    """The hot poll's req/s with `count` event streams open (each on a queued job of its own)
    against the same poll with none open; the server's memory per open stream."""
    import selectors

    conn.flushdb()
    port = free_port()
    with service_server(port):  # the shipped WEB_THREADS (640 per process: 2 x 576 streams)
        base = f"http://127.0.0.1:{port}"
        url = f"{base}/factorize"
        requests.post(url, json={"number": 408216}, timeout=10)
        finish(workers(1, "factorization"))
        assert requests.post(url, json={"number": 408216}, timeout=10).status_code == 200
        alone = measured(url, seconds, runs)
        items = [{"tag": f"stream{i}"} for i in range(count)]
        ids = [r["job_id"] for r in requests.post(f"{base}/bench-nap/batch", json={"items": items}, timeout=60)
               .json()["results"]]  # fmt: skip
        rss_before = process_rss(listening_pid(port))
        sockets = []
        for job_id in ids:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(f"GET /jobs/{job_id} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
                         .encode())  # fmt: skip
            sockets.append(sock)
        received = {sock: b"" for sock in sockets}
        readable = selectors.DefaultSelector()  # epoll: select() takes no descriptor above 1023
        for sock in sockets:
            readable.register(sock, selectors.EVENT_READ)

        def read(timeout: float) -> None:
            for key, _ in readable.select(timeout):
                received[key.fileobj] += key.fileobj.recv(65536)

        deadline = time.monotonic() + 120
        while not all(b"event: status" in data for data in received.values()) and time.monotonic() < deadline:
            read(0.5)
        held = sum(b"event: status" in data and data.startswith(b"HTTP/1.1 200") for data in received.values())
        time.sleep(2)
        rss_after = process_rss(listening_pid(port))
        beside = measured(url, seconds, runs)
        healthz = requests.get(f"{base}/healthz", timeout=10).status_code
        read(0)
        still_open = sum(1 for data in received.values() if b'"done":true' not in data)
        readable.close()
        for sock in sockets:
            sock.close()
    results["streams"] = {
        "count": count, "held": held, "still_open": still_open, "threads": "640 (the default)", "healthz": healthz,
        "alone": alone, "beside": beside, "rss_per_stream": (rss_after - rss_before) / max(1, held),
        "rss_before": rss_before, "rss_after": rss_after,
    }  # fmt: skip


def webhook_latency(samples: int) -> None:
    """Job done (its terminal event, in Redis time) to its completion webhook received by a
    receiver on loopback, one job at a time: one warm worker, one webhooks worker."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    conn.flushdb()
    received: dict[str, float] = {}
    arrived = threading.Condition()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            at = time.time()
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()
            with arrived:
                received[json.loads(body)["job_id"]] = at
                arrived.notify_all()

        def log_message(self, *args):
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_port}/hook"
    env = {"WEBHOOK_SECRET": "whsec_" + "QmVuY2ggd2ViaG9vayBrZXksIDMyIGJ5dGVzIGxvbmc=",
           "WEBHOOK_ALLOWED_HOSTS": f"127.0.0.1:{receiver.server_port}"}  # fmt: skip
    port = free_port()
    with service_server(port, **env):
        url = f"http://127.0.0.1:{port}/factorize"
        procs = warm_worker("factorization", **env) + warm_worker("webhooks", **env)
        seen = []
        for i in range(samples):
            job_id = requests.post(url, json={"number": 5 * 10**6 + i, "webhook": hook}, timeout=30).json()["job_id"]
            with arrived:
                arrived.wait_for(lambda job_id=job_id: job_id in received, timeout=30)
            (done_id, _), = conn.xrevrange(f"factorize:events:{job_id}", count=1)
            seen.append(received[job_id] - int(done_id.decode().split("-")[0]) / 1000)
        stop(procs)
    receiver.shutdown()
    results["webhooks"] = {"samples": samples, "p50_ms": statistics.median(seen) * 1000, "max_ms": max(seen) * 1000}


def fair_drain(sizes: tuple[int, ...] = (20_000, 50_000)) -> None:
    """Two clients' N trivial jobs each, queued first, drained by 2 workers: fair order against FIFO."""
    from django.conf import settings

    from factorize_app import jobs
    from factorize_app.tasks import get_task_type

    incr_type = get_task_type("bench_incr")
    timings: dict[tuple[str, int], float] = {}
    for size in sizes:
        for order in ("fifo", "fair"):
            conn.flushdb()
            settings.QUEUE_ORDER = order
            for start in range(0, size, 1000):
                for client in ("a", "b"):
                    items = [{"i": f"{client}{i}"} for i in range(start, min(size, start + 1000))]
                    jobs.submit_many(task_type=incr_type, items=items, client=f"bench-{client}")
            started = time.monotonic()
            procs = workers(2, "bench_incr", QUEUE_ORDER=order)
            try:
                total = 2 * size
                wait_for(lambda total=total: int(conn.get(COUNTER) or 0) >= total, 900, f"{total} jobs to drain")
                timings[(order, size)] = time.monotonic() - started
            finally:
                stop(procs)
            print(f"  fair drain {order} 2x{size}: {timings[(order, size)]:.1f} s", flush=True)
    settings.QUEUE_ORDER = "fair"
    results["fair_drain"] = {"sizes": sizes, "timings": timings}


def take_cost(depths: tuple[int, ...] = (1_000, 1_000_000), samples: int = 500) -> None:
    """The take script's time for one job with `depth` jobs of two clients queued (fair order),
    measured from this process (one round trip each)."""
    from factorize_app import jobs
    from factorize_app.jobs import keys
    from factorize_app.tasks import get_task_type

    name = get_task_type("bench_incr").name
    medians = {}
    for depth in depths:
        conn.flushdb()
        for start in range(0, depth, 20_000):  # RQ's list, each client's list, the job hashes
            with conn.pipeline(transaction=False) as pipe:
                for i in range(start, min(depth, start + 20_000)):
                    client = "bench-a" if i % 2 else "bench-b"
                    job_id = f"{name}-{i:032x}"
                    pipe.hset(keys.job(job_id), mapping={"status": "queued", "factorize_client": client,
                                                         "description": f"{name} {{\"i\": {i}}}"})  # fmt: skip
                    pipe.rpush(keys.queue(name), job_id)
                    pipe.rpush(keys.fair_client(name, client), job_id)
                pipe.execute()
        conn.zadd(keys.fair_waiting(name), {"bench-a": 0, "bench-b": 0})
        conn.sadd(keys.workers_of(name), keys.worker("bench-taker"))
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            taken = jobs.take_jobs(queue_names=[name], worker_name="bench-taker", count=1, lease=60)
            times.append(time.perf_counter() - started)
            assert len(taken) == 1
        medians[depth] = statistics.median(times) * 1e6
        print(f"  take at {depth:,} queued: {medians[depth]:.0f} µs", flush=True)
    results["take_cost"] = medians


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    server = conn.info("server")["redis_version"]
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, Redis {server}, {platform.platform()}"


def report(args) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}. Load generator, Redis, the service and the peers share the machine.",
        f"Command: `make bench` (`python bench/run.py --runs {args.runs}`), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Each figure is the median of {args.runs} runs; ratios are ours / peer.",
        "",
    ]
    if "hot_path" in results:
        ours, logged, keyed, peer = (results["hot_path"][key] for key in ("ours", "ours_logged", "ours_key", "fastapi"))
        lines += [
            f"## Hot path: `wrk -t2 -c32 -d{args.seconds}s`, POST {{\"number\": 408216}}, result cached, after a 2 s warm-up run of each server",
            "",
            "| server | req/s | p50 ms | p99 ms | non-2xx |",
            "|---|---|---|---|---|",
            f"| ours (scripts/serve.sh as shipped: granian, lean lane, no access log) | {ours['rps']:,.0f} ({ratio(ours['rps'], peer['rps'])}) | {ours['p50']:.2f} | {ours['p99']:.2f} | {ours['errors']:.0f} |",
            f"| ours with ACCESS_LOG=1 (one log line per request) | {logged['rps']:,.0f} ({ratio(logged['rps'], peer['rps'])}) | {logged['p50']:.2f} | {logged['p99']:.2f} | {logged['errors']:.0f} |",
            f"| ours with an API key (`Authorization: Bearer`) | {keyed['rps']:,.0f} ({ratio(keyed['rps'], peer['rps'])}; {ratio(keyed['rps'], ours['rps'])} of ours without) | {keyed['p50']:.2f} | {keyed['p99']:.2f} | {keyed['errors']:.0f} |",
            f"| FastAPI on uvicorn, 2 workers, no access log | {peer['rps']:,.0f} | {peer['p50']:.2f} | {peer['p99']:.2f} | {peer['errors']:.0f} |",
            "",
        ]  # fmt: skip
    if "workers" in results:
        table = results["workers"]
        lines += [f"## Workers: {args.jobs:,} trivial jobs (one INCR each) enqueued, then drained; start-up included", "",
                  "| engine | 1 process jobs/s | 2 processes jobs/s |", "|---|---|---|"]  # fmt: skip
        names = {"ours": "ours (WarmWorker)", "rq_simpleworker": "RQ 3.0 SimpleWorker", "celery": "Celery 5.7",
                 "dramatiq": "Dramatiq 2.2"}  # fmt: skip
        for key, label in names.items():
            lines.append(f"| {label} | {table[(key, 1)]:,.0f} | {table[(key, 2)]:,.0f} |")
        lines += ["", f"Ours with 2 processes: {ratio(table[('ours', 2)], table[('dramatiq', 2)])} Dramatiq, "
                      f"{ratio(table[('ours', 2)], table[('rq_simpleworker', 2)])} RQ SimpleWorker, "
                      f"{ratio(table[('ours', 2)], table[('celery', 2)])} Celery.", ""]  # fmt: skip
    if "end_to_end" in results:
        e2e = results["end_to_end"]
        lines += ["## End to end over HTTP, 2 workers", "",
                  f"- {e2e['count']:,} distinct numbers submitted one by one (16 client threads) and re-posted until done: "
                  f"{e2e['seconds']:.1f} s, {e2e['jobs_per_s']:,.0f} jobs/s.",
                  f"- {e2e['count']:,} other numbers through `POST /factorize/batch` (chunks of 500, `Prefer: wait=30`, "
                  f"4 client threads): {e2e['batch_seconds']:.1f} s, {e2e['batch_jobs_per_s']:,.0f} jobs/s "
                  f"({ratio(e2e['batch_jobs_per_s'], e2e['jobs_per_s'])} the single submits).", ""]  # fmt: skip
    if "fairness" in results:
        fair = results["fairness"]
        lines += ["## Fairness: client B's wait behind client A's 1,000 jobs (one worker, 20 ms jobs)", "",
                  f"- QUEUE_ORDER=fair: {fair['fair'] * 1000:,.0f} ms",
                  f"- QUEUE_ORDER=fifo: {fair['fifo'] * 1000:,.0f} ms ({ratio(fair['fifo'], fair['fair'])} longer)", ""]  # fmt: skip
    if "fairness_varied" in results:
        fv = results["fairness_varied"]
        lines += [f"## Fairness with varied costs: client B's one job behind client A's {fv['count']} "
                  "(products of two 8-digit primes, one worker)", "",
                  f"- B seen done after {fv['b_wait'] * 1000:,.0f} ms; A's {fv['count']} took {fv['a_total'] * 1000:,.0f} ms: "
                  f"B waited {100 * fv['b_wait'] / fv['a_total']:.1f}% of A's total.", ""]  # fmt: skip
    if "digits" in results:
        dg = results["digits"]
        lines += [f"## digits (scikit-learn), {dg['count']:,} images through one warm worker", "",
                  f"- with its batch handler (one `predict_proba` per batch): {dg['batched']:,.0f} jobs/s",
                  f"- one image per call, same classifier: {dg['single']:,.0f} jobs/s "
                  f"(batch handler {ratio(dg['batched'], dg['single'])})",
                  f"- one job, submit to result seen with `Prefer: wait=10`, idle: p50 {dg['latency_p50_ms']:.1f} ms", ""]  # fmt: skip
    if "stop_latency" in results:
        sl = results["stop_latency"]
        lines += ["## Stopping a running job", "",
                  f"DELETE of a running factorization to `canceled` seen by a poller, {sl['samples']} jobs, one warm worker: "
                  f"median {sl['p50_ms']:.0f} ms, at most {sl['max_ms']:.0f} ms (the worker keeps its PID and model).", ""]  # fmt: skip
    if "batch_polls" in results:
        bp = results["batch_polls"]
        lines += ["## Polling many finished jobs", "",
                  f"{bp['count']:,} finished jobs polled: one POST each (16 client threads) {bp['single']:,.0f} items/s; "
                  f"one batch POST {bp['batch']:,.0f} items/s ({ratio(bp['batch'], bp['single'])}).", ""]  # fmt: skip
    if "latency" in results:
        lat = results["latency"]
        lines += ["## Latency: submit to result seen, idle system", "",
                  f"- `Prefer: wait=10`: p50 {lat['wait_p50_ms']:.1f} ms",
                  f"- the event stream (POST, then `GET /jobs/<id>` as `text/event-stream` to the done event): "
                  f"p50 {lat['stream_p50_ms']:.1f} ms",
                  f"- the seed's 1-second polling: p50 {lat['poll_p50_ms']:.1f} ms "
                  f"({ratio(lat['poll_p50_ms'], lat['wait_p50_ms'])} slower)", ""]  # fmt: skip
    if "scale" in results:
        sc = results["scale"]
        deep, t = sc["deep"], sc["timings"]
        lines += ["## Scale: answer time with 10 and with many jobs queued (median ms)", "",
                  f"| request | 10 queued | {deep:,} queued | ratio |", "|---|---|---|---|",
                  f"| `load` (GET /factorize) | {t[('/factorize', 10)]:.2f} | {t[('/factorize', deep)]:.2f} | {ratio(t[('/factorize', deep)], t[('/factorize', 10)])} |",
                  f"| GET /queues | {t[('/queues', 10)]:.2f} | {t[('/queues', deep)]:.2f} | {ratio(t[('/queues', deep)], t[('/queues', 10)])} |",
                  ""]  # fmt: skip
    if "warm" in results:
        warm = results["warm"]
        lines += ["## Warm model", "",
                  f"- {warm['jobs']} `primes` jobs on a warm worker (submitted as one batch, to the last result seen): "
                  f"{warm['warm_s']:.3f} s, {warm['warm_s'] / warm['setup_s']:.2f} × one `setup()` ({warm['setup_s']:.2f} s); "
                  f"{warm['jobs']} × `setup()` would be ≈ {warm['jobs'] * warm['setup_s']:.0f} s.",
                  f"- The same count through a worker started for them (Python and Django start-up and its one `setup()` "
                  f"included): {warm['worker_s']:.2f} s.", ""]  # fmt: skip
    if "fair_drain" in results:
        fd = results["fair_drain"]
        t = fd["timings"]
        lines += ["## Fair order at depth: two clients' trivial jobs queued, then drained by 2 workers", "",
                  "| jobs per client | FIFO s | fair s | fair / FIFO |", "|---|---|---|---|"]  # fmt: skip
        for size in fd["sizes"]:
            lines.append(f"| {size:,} | {t[('fifo', size)]:.1f} | {t[('fair', size)]:.1f} | "
                         f"{ratio(t[('fair', size)], t[('fifo', size)])} |")  # fmt: skip
        lines.append("")
    if "take_cost" in results:
        tc = results["take_cost"]
        depths = sorted(tc)
        lines += ["## The take of one job, by queue depth (fair order, two clients; one round trip, median)", "",
                  *(f"- {depth:,} queued: {tc[depth]:.0f} µs" for depth in depths),
                  f"- {depths[-1]:,} against {depths[0]:,}: {ratio(tc[depths[-1]], tc[depths[0]])}", ""]  # fmt: skip
    if "webhooks" in results:
        wh = results["webhooks"]
        lines += ["## Completion webhooks: job done to webhook received", "",
                  f"{wh['samples']} factorizations one at a time, a receiver on loopback, one warm worker and one "
                  f"webhooks worker: median {wh['p50_ms']:.1f} ms, at most {wh['max_ms']:.1f} ms (signed, "
                  "from the job's terminal event in Redis to the receiver's read).", ""]  # fmt: skip
    if "streams" in results:
        st = results["streams"]
        alone, beside = st["alone"], st["beside"]
        cost = 100 * (1 - beside["rps"] / alone["rps"]) if alone["rps"] else 0
        lines += [f"## Event streams: the hot poll beside {st['count']:,} open streams (`wrk -t2 -c32 -d{args.seconds}s` after a 2 s warm-up)", "",
                  "| | req/s | p50 ms | p99 ms | non-2xx |", "|---|---|---|---|---|",
                  f"| no stream open | {alone['rps']:,.0f} | {alone['p50']:.2f} | {alone['p99']:.2f} | {alone['errors']:.0f} |",
                  f"| {st['held']:,} streams open | {beside['rps']:,.0f} ({ratio(beside['rps'], alone['rps'])}) | "
                  f"{beside['p50']:.2f} | {beside['p99']:.2f} | {beside['errors']:.0f} |", "",
                  f"- cost of the open streams to the hot poll: {cost:.1f}% (goal: under 10%); /healthz answered "
                  f"{st['healthz']}; {st['still_open']:,} streams still open after the run.",
                  f"- server memory (2 processes, WEB_THREADS={st['threads']}): {st['rss_before'] / 2**20:,.0f} MiB "
                  f"before, {st['rss_after'] / 2**20:,.0f} MiB with the streams open: "
                  f"{st['rss_per_stream'] / 1024:,.0f} KiB per stream.", ""]  # fmt: skip
    if "failed" in results:
        lines += ["## Scenarios that failed in this run", "", *(f"- {line}" for line in results["failed"]), ""]
    return "\n".join(lines)


SCENARIOS = [
    "hot_path", "workers", "end_to_end", "latency", "scale", "warm", "fairness", "fairness_varied", "digits", "stop_latency",
    "batch_polls", "streams", "webhooks", "fair_drain", "take_cost",
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration per run")
    parser.add_argument("--jobs", type=int, default=10_000, help="trivial jobs per worker run")
    parser.add_argument("--e2e", type=int, default=5_000)
    parser.add_argument("--deep", type=int, default=100_000, help="queued jobs in the scale scenario")
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, default=SCENARIOS)
    parser.add_argument("--output", default=str(ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args()
    django_setup()
    steps = {
        "hot_path": lambda: hot_path(args.runs, args.seconds),
        "workers": lambda: worker_throughput(args.runs, args.jobs),
        "end_to_end": lambda: end_to_end(args.e2e),
        "latency": lambda: latency(20),
        "scale": lambda: scale(50, args.deep),
        "warm": lambda: warm_model(200),
        "fairness": lambda: fairness(args.runs),
        "fairness_varied": lambda: fairness_varied(args.runs),
        "digits": lambda: digits(2000, 20),
        "stop_latency": lambda: stop_latency(20),
        "batch_polls": lambda: batch_polls(args.runs),
        "streams": lambda: streams(args.runs, args.seconds),
        "webhooks": lambda: webhook_latency(50),
        "fair_drain": lambda: fair_drain(),
        "take_cost": lambda: take_cost(),
    }
    try:
        for name in args.only:
            print(f"bench: {name}", flush=True)
            try:
                steps[name]()
            except Exception as exc:  # one broken scenario must not lose the others' figures
                print(f"bench: {name} failed: {exc!r}", flush=True)
                results.setdefault("failed", []).append(f"{name}: {exc!r}")
    finally:
        conn.flushdb()
    text = report(args)
    Path(args.output).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
