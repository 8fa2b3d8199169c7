"""Event streams: the hot poll's req/s with 1,000 event streams open (each on a queued job of its
own) against the same poll with none open; the server's memory per open stream."""

from __future__ import annotations

import selectors
import socket
import time

import requests

from bench.context import Bench
from bench.engines import cache_hot_answer
from bench.measure import HOT_NUMBER, measured, ratio
from tests.processes import resident_bytes, server_pid


def run(bench: Bench) -> dict:
    runs, seconds, count = bench.options.runs, bench.options.seconds, bench.options.size(1000, 20)
    bench.flush()
    with bench.web_server() as base:  # the shipped WEB_THREADS (640 per process: 2 x 576 streams)
        url = f"{base}/factorize"
        cache_hot_answer(bench, base)
        assert requests.post(url, json={"number": HOT_NUMBER}, timeout=10).status_code == 200
        alone = measured(url, seconds, runs)
        items = [{"tag": f"stream{i}"} for i in range(count)]
        ids = [r["job_id"] for r in requests.post(f"{base}/bench-nap/batch", json={"items": items}, timeout=60)
               .json()["results"]]  # fmt: skip
        rss_before = resident_bytes(server_pid(base))
        port = int(base.rsplit(":", 1)[1])
        sockets = []
        for job_id in ids:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(f"GET /jobs/{job_id} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
                         .encode())  # fmt: skip
            sockets.append(sock)
        received = {sock: b"" for sock in sockets}
        readable = selectors.DefaultSelector()  # epoll: select() takes no descriptor above 1023
        for sock in sockets:
            readable.register(sock, selectors.EVENT_READ)

        def read(timeout: float) -> None:
            for key, _ in readable.select(timeout):
                received[key.fileobj] += key.fileobj.recv(65536)

        deadline = time.monotonic() + 120
        while not all(b"event: status" in data for data in received.values()) and time.monotonic() < deadline:
            read(0.5)
        held = sum(b"event: status" in data and data.startswith(b"HTTP/1.1 200") for data in received.values())
        time.sleep(2)
        rss_after = resident_bytes(server_pid(base))
        beside = measured(url, seconds, runs)
        healthz = requests.get(f"{base}/healthz", timeout=10).status_code
        read(0)
        still_open = sum(1 for data in received.values() if b'"done":true' not in data)
        readable.close()
        for sock in sockets:
            sock.close()
    return {
        "seconds": seconds, "count": count, "held": held, "still_open": still_open, "threads": "640 (the default)",
        "healthz": healthz, "alone": alone, "beside": beside, "rss_per_stream": (rss_after - rss_before) / max(1, held),
        "rss_before": rss_before, "rss_after": rss_after,
    }  # fmt: skip


def report(result: dict) -> list[str]:
    st = result
    alone, beside = st["alone"], st["beside"]
    cost = 100 * (1 - beside["rps"] / alone["rps"]) if alone["rps"] else 0
    return [f"## Event streams: the hot poll beside {st['count']:,} open streams (`wrk -t2 -c32 -d{st['seconds']}s` after a 2 s warm-up)", "",
            "| | req/s | p50 ms | p99 ms | non-2xx |", "|---|---|---|---|---|",
            f"| no stream open | {alone['rps']:,.0f} | {alone['p50']:.2f} | {alone['p99']:.2f} | {alone['errors']:.0f} |",
            f"| {st['held']:,} streams open | {beside['rps']:,.0f} ({ratio(beside['rps'], alone['rps'])}) | "
            f"{beside['p50']:.2f} | {beside['p99']:.2f} | {beside['errors']:.0f} |", "",
            f"- cost of the open streams to the hot poll: {cost:.1f}% (goal: under 10%); /healthz answered "
            f"{st['healthz']}; {st['still_open']:,} streams still open after the run.",
            f"- server memory (2 processes, WEB_THREADS={st['threads']}): {st['rss_before'] / 2**20:,.0f} MiB "
            f"before, {st['rss_after'] / 2**20:,.0f} MiB with the streams open: "
            f"{st['rss_per_stream'] / 1024:,.0f} KiB per stream.", ""]  # fmt: skip
