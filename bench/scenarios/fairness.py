"""Fairness: client B's wait for its one 20 ms job, submitted just after client A's 1,000, one
worker, in fair and in FIFO order."""

from __future__ import annotations

import statistics
import time

import requests

from bench.context import Bench, api_key
from bench.measure import ratio


def run(bench: Bench) -> dict:
    count = bench.options.size(1000, 20)
    waits: dict[str, list[float]] = {"fair": [], "fifo": []}
    for order in ("fair", "fifo"):
        for _ in range(bench.options.runs):
            bench.flush()
            with bench.web_server(QUEUE_ORDER=order) as base:
                url = f"{base}/bench-nap"
                procs = bench.warm_worker("bench_nap", QUEUE_ORDER=order)
                a_items = {"items": [{"tag": f"a{i}"} for i in range(count)]}
                requests.post(f"{url}/batch", json=a_items, headers=api_key("client a"), timeout=60)
                started = time.perf_counter()
                answer = requests.post(url, json={"tag": "b"}, timeout=120,
                                       headers={**api_key("client b"), "Prefer": "wait=60"}).json()  # fmt: skip
                assert answer["done"], answer
                waits[order].append(time.perf_counter() - started)
                bench.stop(procs)
    return {"count": count, **{order: statistics.median(values) for order, values in waits.items()}}


def report(result: dict) -> list[str]:
    return [f"## Fairness: client B's wait behind client A's {result['count']:,} jobs (one worker, 20 ms jobs)", "",
            f"- QUEUE_ORDER=fair: {result['fair'] * 1000:,.0f} ms",
            f"- QUEUE_ORDER=fifo: {result['fifo'] * 1000:,.0f} ms ({ratio(result['fifo'], result['fair'])} longer)", ""]  # fmt: skip
