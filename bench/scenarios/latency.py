"""Submit to result seen on an idle system: `Prefer: wait`, the event stream (opened after the
submit, or the submit's own), and the seed's 1-second polling, over one kept-alive connection,
one warm worker."""

from __future__ import annotations

import json
import statistics
import time

import requests

from bench.context import Bench
from bench.measure import ratio

STREAM = {"Accept": "text/event-stream"}


def run(bench: Bench) -> dict:
    samples = bench.options.size(100, 3)  # the fast paths: a p90 needs more than a few
    polled = bench.options.size(20, 3)  # about a second each
    bench.flush()
    with bench.web_server() as base:
        url = f"{base}/factorize"
        procs = bench.warm_worker("factorization")
        http = requests.Session()  # a client's kept-alive connection, as any client polling would keep
        # No proxy lookup in the environment on every call (about 0.5 ms of requests' own CPU per
        # request here): the figure is the service's time, not the load generator's.
        http.trust_env = False

        def with_wait(n: int) -> float:
            started = time.perf_counter()
            body = http.post(url, json={"number": n}, headers={"Prefer": "wait=10"}, timeout=30).json()
            assert body["done"], body
            return time.perf_counter() - started

        def with_polling(n: int) -> float:
            started = time.perf_counter()
            while not http.post(url, json={"number": n}, timeout=30).json()["done"]:
                time.sleep(1)
            return time.perf_counter() - started

        def with_stream(n: int) -> float:
            started = time.perf_counter()
            job_id = http.post(url, json={"number": n}, timeout=30).json()["job_id"]
            _read_to_done(http.get(f"{base}/jobs/{job_id}", headers=STREAM, stream=True, timeout=30))
            return time.perf_counter() - started

        def with_submitted_stream(n: int) -> float:
            started = time.perf_counter()
            _read_to_done(http.post(url, json={"number": n}, headers=STREAM, stream=True, timeout=30))
            return time.perf_counter() - started

        waits = [with_wait(2 * 10**6 + i) for i in range(samples)]
        streamed = [with_stream(4 * 10**6 + i) for i in range(samples)]
        submitted_streams = [with_submitted_stream(5 * 10**6 + i) for i in range(samples)]
        polls = [with_polling(3 * 10**6 + i) for i in range(polled)]
        bench.stop(procs)
    return {
        "wait_p50_ms": statistics.median(waits) * 1000,
        "wait_p90_ms": _p90(waits) * 1000,
        "stream_p50_ms": statistics.median(streamed) * 1000,
        "stream_p90_ms": _p90(streamed) * 1000,
        "submit_stream_p50_ms": statistics.median(submitted_streams) * 1000,
        "submit_stream_p90_ms": _p90(submitted_streams) * 1000,
        "poll_p50_ms": statistics.median(polls) * 1000,
    }


def _read_to_done(stream: requests.Response) -> None:
    for line in stream.iter_lines():
        if line.startswith(b"data: ") and json.loads(line[6:]).get("done"):
            break
    stream.close()


def _p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10)[-1] if len(samples) > 1 else samples[0]


def report(result: dict) -> list[str]:
    lat = result
    return ["## Latency: submit to result seen, idle system", "",
            f"- `Prefer: wait=10`: p50 {lat['wait_p50_ms']:.1f} ms, p90 {lat.get('wait_p90_ms', 0):.1f} ms",
            f"- the event stream (POST, then `GET /jobs/<id>` as `text/event-stream` to the done event): "
            f"p50 {lat['stream_p50_ms']:.1f} ms, p90 {lat.get('stream_p90_ms', 0):.1f} ms",
            *([f"- the event stream of the submit itself (one request: POST with `Accept: text/event-stream`): "
               f"p50 {lat['submit_stream_p50_ms']:.1f} ms, p90 {lat['submit_stream_p90_ms']:.1f} ms"]
              if "submit_stream_p50_ms" in lat else []),
            f"- the seed's 1-second polling: p50 {lat['poll_p50_ms']:.1f} ms "
            f"({ratio(lat['poll_p50_ms'], lat['wait_p50_ms'])} slower)", ""]  # fmt: skip
