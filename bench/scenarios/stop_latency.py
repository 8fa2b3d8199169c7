"""Stopping a running job: DELETE to `canceled` seen by its poller, one warm worker; each job a
hard semiprime that would run for seconds."""

from __future__ import annotations

import statistics
import time

import requests

from bench.context import Bench
from tests.processes import wait_until


def run(bench: Bench) -> dict:
    from sympy import nextprime

    samples = bench.options.size(20, 3)
    bench.flush()
    with bench.web_server() as url:
        procs = bench.warm_worker("factorization")
        seen = []
        for i in range(samples):
            number = nextprime(10**19 + 10**6 * i) * nextprime(3 * 10**20 + 10**6 * i)
            job_id = requests.post(f"{url}/factorize", json={"number": number}, timeout=30).json()["job_id"]
            wait_until(lambda job_id=job_id: requests.get(f"{url}/jobs/{job_id}", timeout=30).json()["status"] == "started",
                       60, 0.02, "the job to start")  # fmt: skip
            started = time.perf_counter()
            assert requests.delete(f"{url}/jobs/{job_id}", timeout=30).status_code == 202
            while requests.get(f"{url}/jobs/{job_id}", timeout=30).json()["status"] != "canceled":
                time.sleep(0.005)
            seen.append(time.perf_counter() - started)
        bench.stop(procs)
    return {"samples": samples, "p50_ms": statistics.median(seen) * 1000, "max_ms": max(seen) * 1000}


def report(result: dict) -> list[str]:
    sl = result
    return ["## Stopping a running job", "",
            f"DELETE of a running factorization to `canceled` seen by a poller, {sl['samples']} jobs, one warm worker: "
            f"median {sl['p50_ms']:.0f} ms, at most {sl['max_ms']:.0f} ms (the worker keeps its PID and model).", ""]  # fmt: skip
