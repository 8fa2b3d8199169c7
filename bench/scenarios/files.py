"""Files: a 100 MB upload (POST /files, multipart) and its download (GET /files/<id>) through one
web process (scripts/serve.sh, WEB_CONCURRENCY=1) into the default file storage (a directory);
the throughput of each, and the web process's memory while the upload streams through it."""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

import requests

from bench.context import Bench
from tests.processes import ROOT, resident_bytes, server_pid

MB = 1024 * 1024
BOUNDARY = "bench-files-boundary"


class Body:
    """A multipart body of `count` MiB of random bytes as the part `file`, never whole in memory."""

    def __init__(self, count: int) -> None:
        chunk = os.urandom(MB)
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="bench.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self.parts = [memoryview(part) for part in (head, *([chunk] * count), f"\r\n--{BOUNDARY}--\r\n".encode())]
        self.length = sum(len(part) for part in self.parts)

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        """The next `size` bytes (at most: a part at a time, so nothing is copied twice)."""
        while self.parts and not self.parts[0]:
            self.parts.pop(0)
        if not self.parts:
            return b""
        part = self.parts[0]
        size = len(part) if size < 0 else size
        self.parts[0] = part[size:]
        return bytes(part[:size])


def _peak_rss_while(pid: int, action) -> tuple[object, int]:
    """What `action()` answers, and the server's largest resident size while it ran (sampled every 20 ms)."""
    peak, done = [resident_bytes(pid)], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(resident_bytes(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        return action(), max(peak)
    finally:
        done.set()
        sampler.join()


def run(bench: Bench) -> dict:
    megabytes, runs = bench.options.size(100, 2), bench.options.runs
    bench.flush()
    uploads, downloads, peaks, stored = [], [], [], set()
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    with bench.web_server(WEB_CONCURRENCY="1") as base:
        pid = server_pid(base)
        requests.get(f"{base}/files/file_{'0' * 32}", timeout=10)  # the view's modules imported
        idle = resident_bytes(pid)
        for _ in range(runs):
            body = Body(megabytes)
            started = time.perf_counter()
            answer, peak = _peak_rss_while(
                pid, lambda body=body: requests.post(f"{base}/files", data=body, headers=headers, timeout=600)
            )
            uploads.append(megabytes / (time.perf_counter() - started))
            assert answer.status_code == 201, answer.text
            peaks.append(peak)
            stored.add(answer.json()["sha256"])
            started, received = time.perf_counter(), 0
            with requests.get(answer.json()["url"], stream=True, timeout=600) as got:
                for piece in got.iter_content(MB):
                    received += len(piece)
            downloads.append(megabytes / (time.perf_counter() - started))
            assert received == megabytes * MB
        after = resident_bytes(pid)
    for sha256 in stored:  # the default storage (.run/files): no bench bytes left behind
        Path(ROOT, ".run", "files", "blobs", sha256).unlink(missing_ok=True)
    bench.flush()
    return {
        "megabytes": megabytes, "runs": runs, "upload_mb_s": statistics.median(uploads),
        "download_mb_s": statistics.median(downloads), "rss_idle": idle, "rss_peak": max(peaks), "rss_after": after,
    }  # fmt: skip


def report(result: dict) -> list[str]:
    fl = result
    grew = (fl["rss_peak"] - fl["rss_idle"]) / MB
    return [f"## Files: a {fl['megabytes']:,} MB upload and its download, one web process (median of {fl['runs']})", "",
            f"- upload (`POST /files`, multipart, streamed to the file storage): {fl['upload_mb_s']:,.0f} MB/s",
            f"- download (`GET /files/<id>`, streamed): {fl['download_mb_s']:,.0f} MB/s",
            f"- web process memory: {fl['rss_idle'] / MB:,.0f} MiB idle, at most {fl['rss_peak'] / MB:,.0f} MiB during "
            f"the upload (+{grew:,.1f} MiB for {fl['megabytes']:,} MB carried), {fl['rss_after'] / MB:,.0f} MiB after.",
            ""]  # fmt: skip
