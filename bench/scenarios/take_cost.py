"""The take script's time for one job with 1,000 and 1,000,000 jobs of two clients queued (fair
order), measured from this process (one round trip each)."""

from __future__ import annotations

import statistics
import time

from bench.context import Bench
from bench.measure import ratio

DEPTHS = (1_000, 1_000_000)


def run(bench: Bench) -> dict:
    from factorize_app import jobs
    from factorize_app.jobs import keys, states
    from factorize_app.tasks import get_task_type

    depths, samples = [bench.options.size(depth, 100) for depth in DEPTHS], bench.options.size(500, 20)
    name = get_task_type("bench_incr").name
    medians = {}
    for depth in depths:
        bench.flush()
        for start in range(0, depth, 20_000):  # RQ's list, each client's list, the job hashes
            with bench.conn.pipeline(transaction=False) as pipe:
                for i in range(start, min(depth, start + 20_000)):
                    client = "bench-a" if i % 2 else "bench-b"
                    job_id = f"{name}-{i:032x}"
                    pipe.hset(keys.job(job_id), mapping={"status": states.QUEUED, "factorize_client": client,
                                                         "description": f"{name} {{\"i\": {i}}}"})  # fmt: skip
                    pipe.rpush(keys.queue(name), job_id)
                    pipe.rpush(keys.fair_client(name, client), job_id)
                pipe.execute()
        bench.conn.zadd(keys.fair_waiting(name), {"bench-a": 0, "bench-b": 0})
        bench.conn.sadd(keys.workers_of(name), keys.worker("bench-taker"))
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            taken = jobs.take_jobs(queue_names=[name], worker_name="bench-taker", count=1, lease=60)
            times.append(time.perf_counter() - started)
            assert len(taken) == 1
        medians[str(depth)] = statistics.median(times) * 1e6
        print(f"  take at {depth:,} queued: {medians[str(depth)]:.0f} µs", flush=True)
    return {"medians": medians}


def report(result: dict) -> list[str]:
    medians = {int(depth): us for depth, us in result["medians"].items()}
    depths = sorted(medians)
    return ["## The take of one job, by queue depth (fair order, two clients; one round trip, median)", "",
            *(f"- {depth:,} queued: {medians[depth]:.0f} µs" for depth in depths),
            f"- {depths[-1]:,} against {depths[0]:,}: {ratio(medians[depths[-1]], medians[depths[0]])}", ""]  # fmt: skip
