"""Streamed outputs: submit to the first streamed piece seen by the client, on an idle system, one
warm worker, over one kept-alive connection: POST a factorization, open its event stream, and
stop at the first prime it streams (in the first status body's `output`, or an `output` event),
against the same job's end. The numbers' smallest primes come from trial division at once; the
rest take Pollard rho and ECM a few tenths of a second more."""

from __future__ import annotations

import json
import math
import statistics
import time

import requests
from sympy import nextprime

from bench.context import Bench


def _number(sample: int) -> int:
    """2^3 3, then primes of 10, 12 and 14 digits, different for each sample (sympy remembers factors)."""
    return 2**3 * 3 * math.prod(nextprime(10**digits + (sample + 20) * 10 ** (digits - 3)) for digits in (9, 11, 13))


def run(bench: Bench) -> dict:
    samples = bench.options.size(20, 3)
    bench.flush()
    firsts, opened, ends = [], [], []
    with bench.web_server() as base:
        procs = bench.warm_worker("factorization")
        http = requests.Session()
        for sample in range(samples):
            started = time.perf_counter()
            job_id = http.post(f"{base}/factorize", json={"number": str(_number(sample))}, timeout=30).json()["job_id"]
            stream = http.get(f"{base}/jobs/{job_id}", headers={"Accept": "text/event-stream"}, stream=True, timeout=60)
            first = seen = None
            kind = None
            for line in stream.iter_lines():
                if line.startswith(b"event: "):
                    kind = line[7:]
                elif line.startswith(b"data: "):
                    data = json.loads(line[6:])
                    seen = seen or time.perf_counter() - started
                    if first is None and (kind == b"output" or data.get("output")):
                        first = time.perf_counter() - started
                    if kind == b"status" and data["done"]:
                        break
            stream.close()
            firsts.append(first)
            opened.append(seen)
            ends.append(time.perf_counter() - started)
        bench.stop(procs)
    return {
        "samples": samples,
        "first_output_p50_ms": statistics.median(firsts) * 1000,
        "first_output_max_ms": max(firsts) * 1000,
        "first_event_p50_ms": statistics.median(opened) * 1000,
        "done_p50_ms": statistics.median(ends) * 1000,
    }


def report(result: dict) -> list[str]:
    return [
        "## Streamed outputs: submit to the first piece seen",
        "",
        f"A factorization streaming each prime as found ({result['samples']} numbers of 37 digits, one warm "
        "worker, idle system): the client POSTs, opens the job's event stream and times the first prime it "
        "sees, against the job's end.",
        "",
        f"- first streamed output: p50 **{result['first_output_p50_ms']:.1f} ms** (max "
        f"{result['first_output_max_ms']:.1f} ms)",
        f"- the stream's first event (the job's state when it opened), for comparison: p50 "
        f"{result['first_event_p50_ms']:.1f} ms",
        f"- the job's end (the done event): p50 {result['done_p50_ms']:.1f} ms",
        "",
    ]
