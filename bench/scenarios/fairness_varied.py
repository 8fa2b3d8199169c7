"""Fairness with varied costs: client B's one job behind client A's 300 jobs of varied cost
(products of two random 8-digit primes, factored in 1-40 ms), one worker: B's wait against A's total."""

from __future__ import annotations

import random
import statistics
import time

import requests

from bench.context import Bench, api_key


def run(bench: Bench) -> dict:
    from sympy import nextprime

    count = bench.options.size(300, 10)
    rng = random.Random(7)

    def prime() -> int:
        return nextprime(rng.randrange(10**7, 10**8 - 10**4))

    waits, totals = [], []
    for run_index in range(bench.options.runs):
        bench.flush()
        numbers = [prime() * prime() for _ in range(count)]
        a, b = api_key("client a"), api_key("client b")
        with bench.web_server() as base:
            url = f"{base}/factorize"
            procs = bench.warm_worker("factorization")
            started = time.perf_counter()
            requests.post(f"{url}/batch", json={"numbers": numbers}, headers=a, timeout=60)
            b_started = time.perf_counter()
            answer = requests.post(url, json={"number": 408216 + run_index}, timeout=120,
                                   headers={**b, "Prefer": "wait=60"}).json()  # fmt: skip
            assert answer["done"], answer
            waits.append(time.perf_counter() - b_started)
            done = requests.post(f"{url}/batch", json={"numbers": numbers}, timeout=300,
                                 headers={**a, "Prefer": "wait=60"}).json()  # fmt: skip
            assert all(item["done"] for item in done["results"])
            totals.append(time.perf_counter() - started)
            bench.stop(procs)
    return {"count": count, "b_wait": statistics.median(waits), "a_total": statistics.median(totals)}


def report(result: dict) -> list[str]:
    fv = result
    return [f"## Fairness with varied costs: client B's one job behind client A's {fv['count']} "
            "(products of two 8-digit primes, one worker)", "",
            f"- B seen done after {fv['b_wait'] * 1000:,.0f} ms; A's {fv['count']} took {fv['a_total'] * 1000:,.0f} ms: "
            f"B waited {100 * fv['b_wait'] / fv['a_total']:.1f}% of A's total.", ""]  # fmt: skip
