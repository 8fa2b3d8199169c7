"""Answer time of `load` (GET /factorize) and GET /queues with 10 and with 100,000 jobs queued."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.context import Bench
from bench.measure import ratio

PATHS = ("/factorize", "/queues")


def run(bench: Bench) -> dict:
    from factorize_app import jobs
    from factorize_app.tasks import get_task_type

    samples, deep = bench.options.size(50, 5), bench.options.size(bench.options.deep, 100)
    factorization = get_task_type("factorization")
    bench.flush()
    timings: dict[str, dict[str, float]] = {path: {} for path in PATHS}
    with bench.web_server() as base:
        session = requests.Session()
        queued = 0
        for depth in (10, deep):
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda i: jobs.submit(task_type=factorization, data={"number": 10**7 + i}),
                              range(queued, depth)))  # fmt: skip
            queued = depth
            for path in PATHS:
                durations = []
                for _ in range(samples):
                    started = time.perf_counter()
                    session.get(base + path, timeout=30).raise_for_status()
                    durations.append(time.perf_counter() - started)
                timings[path][str(depth)] = statistics.median(durations) * 1000
    return {"deep": deep, "timings": timings}


def report(result: dict) -> list[str]:
    deep, t = result["deep"], result["timings"]
    shallow, many = t["/factorize"]["10"], t["/factorize"][str(deep)]
    queues, queues_many = t["/queues"]["10"], t["/queues"][str(deep)]
    return ["## Scale: answer time with 10 and with many jobs queued (median ms)", "",
            f"| request | 10 queued | {deep:,} queued | ratio |", "|---|---|---|---|",
            f"| `load` (GET /factorize) | {shallow:.2f} | {many:.2f} | {ratio(many, shallow)} |",
            f"| GET /queues | {queues:.2f} | {queues_many:.2f} | {ratio(queues_many, queues)} |",
            ""]  # fmt: skip
