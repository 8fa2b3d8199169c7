"""The digits model (scikit-learn) through one warm worker, with its batch handler and one image
per call (the same classifier), and a single job's submit-to-seen latency on an idle system."""

from __future__ import annotations

import statistics
import time

import requests

from bench.context import Bench
from bench.measure import ratio


def run(bench: Bench) -> dict:
    import numpy as np

    from factorize_app import jobs
    from factorize_app.tasks import get_task_type
    from factorize_app.tasks.digits.model import held_out_split

    count, samples = bench.options.size(2000, 50), bench.options.size(20, 5)
    images = held_out_split()[1]
    rng = np.random.default_rng(3)
    items = [
        {"pixels": [int(v) for v in np.clip(images[i % len(images)] + rng.integers(-1, 2, 64), 0, 16)]}
        for i in range(count)
    ]
    rates = {}
    for name in ("digits", "bench_digits_single"):
        bench.flush()
        task_type = get_task_type(name)
        procs = bench.warm_worker(name)
        started = time.monotonic()
        states = jobs.submit_many(task_type=task_type, items=items, wait=120)
        rates[name] = count / (time.monotonic() - started)
        assert all(state.done for state in states)
        bench.stop(procs)
    bench.flush()
    with bench.web_server() as base:
        url = f"{base}/digits"
        procs = bench.warm_worker("digits")
        seen = []
        for item in items[:samples]:
            started = time.perf_counter()
            body = requests.post(url, json=item, headers={"Prefer": "wait=10"}, timeout=30).json()
            assert body["done"], body
            seen.append(time.perf_counter() - started)
        bench.stop(procs)
    return {
        "count": count,
        "batched": rates["digits"],
        "single": rates["bench_digits_single"],
        "latency_p50_ms": statistics.median(seen) * 1000,
    }


def report(result: dict) -> list[str]:
    dg = result
    return [f"## digits (scikit-learn), {dg['count']:,} images through one warm worker", "",
            f"- with its batch handler (one `predict_proba` per batch): {dg['batched']:,.0f} jobs/s",
            f"- one image per call, same classifier: {dg['single']:,.0f} jobs/s "
            f"(batch handler {ratio(dg['batched'], dg['single'])})",
            f"- one job, submit to result seen with `Prefer: wait=10`, idle: p50 {dg['latency_p50_ms']:.1f} ms", ""]  # fmt: skip
