"""Ours and the peers, as the scenarios start them: the trivial job's engines (ours, RQ's
SimpleWorker, Celery, Dramatiq: enqueue N, start P processes) and the hot poll's servers (ours as
shipped, FastAPI on uvicorn), each over the same Redis."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.context import BIN, Bench
from bench.measure import CACHED_KEY, HOT_NUMBER
from tests.processes import answers, free_port


@dataclasses.dataclass(frozen=True)
class Engine:
    label: str
    enqueue: Callable[[Bench, int], None]
    start: Callable[[Bench, int], list[subprocess.Popen]]


def _enqueue_ours(bench: Bench, count: int) -> None:
    from factorize_app import jobs
    from factorize_app.tasks import get_task_type

    incr_type = get_task_type("bench_incr")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: jobs.submit(task_type=incr_type, data={"i": i}), range(count)))


def _enqueue_rq(bench: Bench, count: int) -> None:
    from rq import Queue

    queue = Queue("bench_rq", connection=bench.conn)
    with bench.conn.pipeline() as pipe:
        for _ in range(count):
            queue.enqueue("bench.peers.rq_job.incr", pipeline=pipe, result_ttl=600)
        pipe.execute()


def _enqueue_celery(bench: Bench, count: int) -> None:
    from bench.peers.celery_app import incr

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: incr.delay(), range(count)))


def _enqueue_dramatiq(bench: Bench, count: int) -> None:
    from bench.peers.dramatiq_app import incr

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: incr.send(), range(count)))


def _start_rq(bench: Bench, processes: int) -> list[subprocess.Popen]:
    args = [str(BIN / "rq"), "worker", "bench_rq", "--burst", "-w", "rq.worker.SimpleWorker", "--url",
            bench.redis_url, "--quiet"]  # fmt: skip
    return [bench.spawn(args) for _ in range(processes)]


def _start_celery(bench: Bench, processes: int) -> list[subprocess.Popen]:
    pool = ["--pool", "solo"] if processes == 1 else ["--pool", "prefork", "--concurrency", str(processes)]
    args = [str(BIN / "celery"), "-A", "bench.peers.celery_app", "worker", *pool, "--loglevel", "WARNING"]
    return [bench.spawn(args)]


def _start_dramatiq(bench: Bench, processes: int) -> list[subprocess.Popen]:
    return [bench.spawn([str(BIN / "dramatiq"), "bench.peers.dramatiq_app", "--processes", str(processes)])]


ENGINES = {
    "ours": Engine("ours (WarmWorker)", _enqueue_ours, lambda bench, p: bench.workers(p, "bench_incr")),
    "rq_simpleworker": Engine("RQ 3.0 SimpleWorker", _enqueue_rq, _start_rq),
    "celery": Engine("Celery 5.7", _enqueue_celery, _start_celery),
    "dramatiq": Engine("Dramatiq 2.2", _enqueue_dramatiq, _start_dramatiq),
}


def drain_rate(bench: Bench, engine: str, count: int, processes: int, steady: bool = False) -> float:
    """Trivial jobs/s: `count` enqueued first, then drained by `processes`, start-up included; or,
    `steady`, from the 10th to the 90th percent of the jobs done (every process started and warm)."""
    bench.flush()
    ENGINES[engine].enqueue(bench, count)
    started = time.monotonic()
    procs = ENGINES[engine].start(bench, processes)
    try:
        if not steady:
            bench.wait_for_counter(count)
            return count / (time.monotonic() - started)
        marks = []
        for share in (0.1, 0.9):
            bench.wait_for_counter(round(count * share))
            marks.append((time.monotonic(), bench.counter()))
        (t0, c0), (t1, c1) = marks
        bench.wait_for_counter(count)
        return (c1 - c0) / (t1 - t0)
    finally:
        bench.stop(procs)


def cache_hot_answer(bench: Bench, url: str) -> None:
    """Run the hot poll's job once (a burst worker) and keep its answer for the FastAPI peer."""
    if bench.conn.exists(CACHED_KEY):
        return
    requests.post(f"{url}/factorize", json={"number": HOT_NUMBER}, timeout=10)
    bench.finish(bench.workers(1, "factorization"))
    done = requests.post(f"{url}/factorize", json={"number": HOT_NUMBER}, timeout=10)
    assert done.status_code == 200, done.text
    bench.conn.set(CACHED_KEY, done.content)


@contextlib.contextmanager
def fastapi_server(bench: Bench, workers: int = 2) -> Iterator[str]:
    """The hot poll's peer (bench/peers/fastapi_app.py) on uvicorn with `workers` processes."""
    port = free_port()
    args = [str(BIN / "uvicorn"), "bench.peers.fastapi_app:app", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--no-access-log", "--log-level", "warning"]  # fmt: skip
    with bench.running(args, ready=answers(f"http://127.0.0.1:{port}/docs")):
        yield f"http://127.0.0.1:{port}"
