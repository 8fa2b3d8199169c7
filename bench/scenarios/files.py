"""Files: a 100 MB upload (POST /files, multipart) and its download (GET /files/<id>) through one
web process (scripts/serve.sh, WEB_CONCURRENCY=1) into the default file storage (a directory);
the throughput of each, and the web process's memory while the upload streams through it."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import requests

from bench.context import Bench
from tests.processes import ROOT, RepeatedUpload, peak_resident_while, resident_bytes, server_pid

MB = 1024 * 1024


def run(bench: Bench) -> dict:
    megabytes, runs = bench.options.size(100, 2), bench.options.runs
    bench.flush()
    uploads, downloads, peaks, stored = [], [], [], set()
    with bench.web_server(WEB_CONCURRENCY="1") as base:
        pid = server_pid(base)
        requests.get(f"{base}/files/file_{'0' * 32}", timeout=10)  # the view's modules imported
        idle = resident_bytes(pid)
        for _ in range(runs):
            body = RepeatedUpload(os.urandom(MB), megabytes, name="bench.bin")
            started = time.perf_counter()
            answer, peak = peak_resident_while(
                pid,
                lambda body=body: requests.post(
                    f"{base}/files", data=body, headers={"Content-Type": body.content_type}, timeout=600
                ),
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
