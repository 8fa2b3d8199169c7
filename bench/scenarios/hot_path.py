"""The hot poll: req/s and latency of POST {"number": 408216} answered from a cached result, at
32 connections, ours as shipped (with and without the access log, with an API key) against a
FastAPI/uvicorn endpoint over the same cached value."""

from __future__ import annotations

import requests

from bench.charts import Bars
from bench.context import Bench, api_key
from bench.engines import cache_hot_answer, fastapi_server
from bench.measure import HOT_NUMBER, measured, ratio


def run(bench: Bench) -> dict:
    runs, seconds = bench.options.runs, bench.options.seconds
    bench.flush()
    ours = {}
    keyed = api_key("hot path")
    for access_log in ("1", "0"):
        with bench.web_server(ACCESS_LOG=access_log) as base:
            cache_hot_answer(bench, base)
            url = f"{base}/factorize"
            ours[access_log] = measured(url, seconds, runs)
            if access_log == "0":  # the same poll with an API key: its cost is the key's check
                assert requests.post(url, json={"number": HOT_NUMBER}, headers=keyed, timeout=10).status_code == 200
                ours["key"] = measured(url, seconds, runs, headers=keyed)
    with fastapi_server(bench) as base:
        peer = measured(f"{base}/factorize", seconds, runs)
    return {"seconds": seconds, "ours": ours["0"], "ours_logged": ours["1"], "ours_key": ours["key"], "fastapi": peer}


def report(result: dict) -> list[str]:
    ours, logged, keyed, peer = (result[key] for key in ("ours", "ours_logged", "ours_key", "fastapi"))
    return [
        f'## Hot path: `wrk -t2 -c32 -d{result["seconds"]}s`, POST {{"number": 408216}}, result cached, after a 2 s warm-up run of each server',
        "",
        "| server | req/s | p50 ms | p99 ms | non-2xx |",
        "|---|---|---|---|---|",
        f"| ours (scripts/serve.sh as shipped: granian, lean lane, no access log) | {ours['rps']:,.0f} ({ratio(ours['rps'], peer['rps'])}) | {ours['p50']:.2f} | {ours['p99']:.2f} | {ours['errors']:.0f} |",
        f"| ours with ACCESS_LOG=1 (one log line per request) | {logged['rps']:,.0f} ({ratio(logged['rps'], peer['rps'])}) | {logged['p50']:.2f} | {logged['p99']:.2f} | {logged['errors']:.0f} |",
        f"| ours with an API key (`Authorization: Bearer`) | {keyed['rps']:,.0f} ({ratio(keyed['rps'], peer['rps'])}; {ratio(keyed['rps'], ours['rps'])} of ours without) | {keyed['p50']:.2f} | {keyed['p99']:.2f} | {keyed['errors']:.0f} |",
        f"| FastAPI on uvicorn, 2 workers, no access log | {peer['rps']:,.0f} | {peer['p50']:.2f} | {peer['p99']:.2f} | {peer['errors']:.0f} |",
        "",
    ]


def charts(result: dict) -> list[Bars]:
    servers = {
        "ours": "ours",
        "ours_logged": "ours, access log",
        "ours_key": "ours, API key",
        "fastapi": "FastAPI/uvicorn",
    }
    return [
        Bars("hot_path_rps", "Hot poll, 2 processes, 32 connections", "req/s",
             {"req/s": {label: result[key]["rps"] for key, label in servers.items()}}),
        Bars("hot_path_latency", "Hot poll latency, 32 connections", "ms",
             {f"{p}": {label: result[key][p] for key, label in servers.items()} for p in ("p50", "p99")}),
    ]  # fmt: skip
