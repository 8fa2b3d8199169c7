"""Polls of 1,000 finished jobs: one POST per item (16 threads) against one batch POST."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.context import Bench
from bench.measure import ratio


def run(bench: Bench) -> dict:
    count = bench.options.size(1000, 50)
    bench.flush()
    numbers = list(range(3 * 10**6, 3 * 10**6 + count))
    with bench.web_server() as base:
        url = f"{base}/factorize"
        procs = bench.workers(2, "factorization", burst=False)
        requests.post(f"{url}/batch", json={"numbers": numbers}, headers={"Prefer": "wait=60"}, timeout=90)
        bench.stop(procs)
        local = threading.local()

        def single(n: int) -> None:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            assert local.session.post(url, json={"number": n}, timeout=30).json()["done"]

        singles, batches = [], []
        for _ in range(bench.options.runs):
            started = time.monotonic()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(single, numbers))
            singles.append(count / (time.monotonic() - started))
            started = time.monotonic()
            answer = requests.post(f"{url}/batch", json={"numbers": numbers}, timeout=60).json()
            assert all(item["done"] for item in answer["results"])
            batches.append(count / (time.monotonic() - started))
    return {"count": count, "single": statistics.median(singles), "batch": statistics.median(batches)}


def report(result: dict) -> list[str]:
    bp = result
    return ["## Polling many finished jobs", "",
            f"{bp['count']:,} finished jobs polled: one POST each (16 client threads) {bp['single']:,.0f} items/s; "
            f"one batch POST {bp['batch']:,.0f} items/s ({ratio(bp['batch'], bp['single'])}).", ""]  # fmt: skip
