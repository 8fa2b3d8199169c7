"""End to end over HTTP, 2 workers: distinct numbers submitted one by one and re-posted until
done (16 client threads), then as many others through the batch endpoint."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.context import Bench
from bench.measure import ratio


def run(bench: Bench) -> dict:
    count = bench.options.size(bench.options.e2e, 50)
    bench.flush()
    numbers = list(range(10**6, 10**6 + count))
    with bench.web_server() as base:
        url = f"{base}/factorize"
        procs = bench.workers(2, "factorization", burst=False)
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
        bench.stop(procs)
    return {
        "count": count,
        "seconds": elapsed,
        "jobs_per_s": count / elapsed,
        "batch_seconds": batch_elapsed,
        "batch_jobs_per_s": count / batch_elapsed,
    }


def report(result: dict) -> list[str]:
    e2e = result
    return ["## End to end over HTTP, 2 workers", "",
            f"- {e2e['count']:,} distinct numbers submitted one by one (16 client threads) and re-posted until done: "
            f"{e2e['seconds']:.1f} s, {e2e['jobs_per_s']:,.0f} jobs/s.",
            f"- {e2e['count']:,} other numbers through `POST /factorize/batch` (chunks of 500, `Prefer: wait=30`, "
            f"4 client threads): {e2e['batch_seconds']:.1f} s, {e2e['batch_jobs_per_s']:,.0f} jobs/s "
            f"({ratio(e2e['batch_jobs_per_s'], e2e['jobs_per_s'])} the single submits).", ""]  # fmt: skip
