"""The warm model: 200 `primes` jobs on a warm worker against that many `setup()`s; also the cold
figure, a worker started for them (start-up and its one setup included)."""

from __future__ import annotations

import statistics
import time

from bench.context import Bench


def run(bench: Bench) -> dict:
    from factorize_app import jobs
    from factorize_app.tasks import get_task_type
    from factorize_app.tasks.primes.model import PrimeCounter

    count = bench.options.size(200, 10)
    primes = get_task_type("primes")
    bench.flush()
    for i in range(count):
        jobs.submit(task_type=primes, data={"n": 1000 + i})
    started = time.monotonic()
    bench.finish(bench.workers(1, "primes"))
    cold = time.monotonic() - started
    bench.flush()
    procs = bench.warm_worker("primes")
    started = time.monotonic()
    states = jobs.submit_many(task_type=primes, items=[{"n": 2000 + i} for i in range(count)], wait=60)
    warm = time.monotonic() - started
    assert all(state.done for state in states)
    bench.stop(procs)
    setups = []
    for _ in range(3):
        started = time.monotonic()
        PrimeCounter().setup()
        setups.append(time.monotonic() - started)
    return {"jobs": count, "warm_s": warm, "worker_s": cold, "setup_s": statistics.median(setups)}


def report(result: dict) -> list[str]:
    warm = result
    return ["## Warm model", "",
            f"- {warm['jobs']} `primes` jobs on a warm worker (submitted as one batch, to the last result seen): "
            f"{warm['warm_s']:.3f} s, {warm['warm_s'] / warm['setup_s']:.2f} × one `setup()` ({warm['setup_s']:.2f} s); "
            f"{warm['jobs']} × `setup()` would be ≈ {warm['jobs'] * warm['setup_s']:.0f} s.",
            f"- The same count through a worker started for them (Python and Django start-up and its one `setup()` "
            f"included): {warm['worker_s']:.2f} s.", ""]  # fmt: skip
