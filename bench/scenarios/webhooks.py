"""Completion webhooks: job done (its terminal event, in Redis time) to its webhook received by a
receiver on loopback, one job at a time: one warm worker, one webhooks worker."""

from __future__ import annotations

import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from bench.context import Bench

SECRET = "whsec_" + "QmVuY2ggd2ViaG9vayBrZXksIDMyIGJ5dGVzIGxvbmc="


def run(bench: Bench) -> dict:
    from factorize_app.jobs import keys

    samples = bench.options.size(50, 5)
    bench.flush()
    received: dict[str, float] = {}
    arrived = threading.Condition()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            at = time.time()
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()
            with arrived:
                received[json.loads(body)["job_id"]] = at
                arrived.notify_all()

        def log_message(self, *args):
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_port}/hook"
    env = {"WEBHOOK_SECRET": SECRET, "WEBHOOK_ALLOWED_HOSTS": f"127.0.0.1:{receiver.server_port}"}
    try:
        with bench.web_server(**env) as base:
            url = f"{base}/factorize"
            procs = bench.warm_worker("factorization", **env) + bench.warm_worker("webhooks", **env)
            seen = []
            for i in range(samples):
                job_id = requests.post(url, json={"number": 5 * 10**6 + i, "webhook": hook}, timeout=30).json()[
                    "job_id"
                ]
                with arrived:
                    arrived.wait_for(lambda job_id=job_id: job_id in received, timeout=30)
                ((done_id, _),) = bench.conn.xrevrange(keys.events(job_id), count=1)
                seen.append(received[job_id] - int(done_id.decode().split("-")[0]) / 1000)
            bench.stop(procs)
    finally:
        receiver.shutdown()
    return {"samples": samples, "p50_ms": statistics.median(seen) * 1000, "max_ms": max(seen) * 1000}


def report(result: dict) -> list[str]:
    wh = result
    return ["## Completion webhooks: job done to webhook received", "",
            f"{wh['samples']} factorizations one at a time, a receiver on loopback, one warm worker and one "
            f"webhooks worker: median {wh['p50_ms']:.1f} ms, at most {wh['max_ms']:.1f} ms (signed, "
            "from the job's terminal event in Redis to the receiver's read).", ""]  # fmt: skip
