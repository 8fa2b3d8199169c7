"""The measuring tools the scenarios share: wrk over the hot poll, medians, ratios, the machine."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
from pathlib import Path

import redis

from tests.processes import ROOT

POST_LUA = 'wrk.method = "POST"\nwrk.body = \'{"number": 408216}\'\nwrk.headers["Content-Type"] = "application/json"\n'
HOT_NUMBER = 408216  # the hot poll's input: its result cached before any measured run
CACHED_KEY = "bench:cached"  # the cached answer the FastAPI peer serves (bench/peers/fastapi_app.py)


def wrk(url: str, seconds: int, connections: int = 32, headers: dict[str, str] | None = None) -> dict[str, float]:
    """One wrk run of POST {"number": 408216}: req/s, p50 and p99 in ms, non-2xx answers."""
    script = ROOT / ".run" / f"bench-post-{os.getpid()}.lua"
    script.parent.mkdir(exist_ok=True)
    extra = "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in (headers or {}).items())
    script.write_text(POST_LUA + extra)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    def latency(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency("50%"),
        "p99": latency("99%"),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
    }


def measured(url: str, seconds: int, runs: int, headers: dict[str, str] | None = None) -> dict[str, float]:
    """The median of `runs` wrk runs, after a 2-second run not counted: a server just started may
    still be loading its second process, and its caches (keys, bodies, connections) are cold."""
    wrk(url, 2, headers=headers)
    return median_of([wrk(url, seconds, headers=headers) for _ in range(runs)])


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def ratio(ours: float, peer: float) -> str:
    return f"{ours / peer:.2f}×" if peer else "n/a"


def cores() -> int:
    """The cores this process may run on (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0))


def machine(conn: redis.Redis) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    server = conn.info("server")["redis_version"]
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, Redis {server}, {platform.platform()}"
