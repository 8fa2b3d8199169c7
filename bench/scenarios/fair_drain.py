"""Fair order at depth: two clients' N trivial jobs each, queued first, drained by 2 workers, in
fair order against FIFO (20,000 and 50,000 per client)."""

from __future__ import annotations

import time

from bench.context import Bench
from bench.measure import ratio

SIZES = (20_000, 50_000)


def run(bench: Bench) -> dict:
    from django.conf import settings

    from factorize_app import jobs
    from factorize_app.tasks import get_task_type

    sizes = [bench.options.size(size, 100) for size in SIZES]
    incr_type = get_task_type("bench_incr")
    timings: dict[str, dict[str, float]] = {"fifo": {}, "fair": {}}
    try:
        for size in sizes:
            for order in ("fifo", "fair"):
                bench.flush()
                settings.QUEUE_ORDER = order  # this process submits in that order's layout
                for start in range(0, size, 1000):
                    for client in ("a", "b"):
                        items = [{"i": f"{client}{i}"} for i in range(start, min(size, start + 1000))]
                        jobs.submit_many(task_type=incr_type, items=items, client=f"bench-{client}")
                started = time.monotonic()
                procs = bench.workers(2, "bench_incr", QUEUE_ORDER=order)
                try:
                    bench.wait_for_counter(2 * size, 900)
                    timings[order][str(size)] = time.monotonic() - started
                finally:
                    bench.stop(procs)
                print(f"  fair drain {order} 2x{size}: {timings[order][str(size)]:.1f} s", flush=True)
    finally:
        settings.QUEUE_ORDER = "fair"
    return {"sizes": sizes, "timings": timings}


def report(result: dict) -> list[str]:
    t = result["timings"]
    lines = ["## Fair order at depth: two clients' trivial jobs queued, then drained by 2 workers", "",
             "| jobs per client | FIFO s | fair s | fair / FIFO |", "|---|---|---|---|"]  # fmt: skip
    for size in map(str, result["sizes"]):
        lines.append(
            f"| {int(size):,} | {t['fifo'][size]:.1f} | {t['fair'][size]:.1f} | {ratio(t['fair'][size], t['fifo'][size])} |"
        )
    return [*lines, ""]
