"""Scaling with processes: trivial jobs/s draining a queue (steady rate) with 1, 2 and, where the
machine has the cores, 4 and 8 worker processes, ours against Dramatiq (its default threads); and
the hot poll's req/s with as many web processes, ours (granian, `WEB_CONCURRENCY`=N) against
FastAPI/uvicorn (`--workers` N). The same command draws the curve further on a bigger machine."""

from __future__ import annotations

import statistics

from bench.charts import Curves
from bench.context import Bench, Options
from bench.engines import cache_hot_answer, drain_rate, fastapi_server
from bench.measure import cores, measured, ratio

COUNTS = (1, 2, 4, 8)


def process_counts(options: Options) -> list[int]:
    """The counts asked for (`--processes`), else 1 and 2, and 4 and 8 where there are as many cores."""
    return list(options.processes) or [n for n in COUNTS if n <= max(2, cores())]


def run(bench: Bench) -> dict:
    options = bench.options
    counts, jobs = process_counts(options), options.size(options.jobs, 200)
    workers: dict[str, list[float]] = {"ours": [], "dramatiq": []}
    hot: dict[str, list[dict[str, float]]] = {"ours": [], "fastapi": []}
    for processes in counts:
        for engine, rates in workers.items():
            rates.append(statistics.median(drain_rate(bench, engine, jobs, processes, steady=True)
                                           for _ in range(options.runs)))  # fmt: skip
            print(f"  scaling workers {engine} x{processes}: {rates[-1]:.0f} jobs/s", flush=True)
        bench.flush()
        with bench.web_server(WEB_CONCURRENCY=str(processes)) as base:
            cache_hot_answer(bench, base)
            hot["ours"].append(measured(f"{base}/factorize", options.seconds, options.runs))
        with fastapi_server(bench, processes) as base:
            hot["fastapi"].append(measured(f"{base}/factorize", options.seconds, options.runs))
        print(f"  scaling hot poll x{processes}: {hot['ours'][-1]['rps']:.0f} / {hot['fastapi'][-1]['rps']:.0f} req/s",
              flush=True)  # fmt: skip
    return {"processes": counts, "cores": cores(), "jobs": jobs, "seconds": options.seconds, "workers": workers,
            "hot_poll": hot}  # fmt: skip


def report(result: dict) -> list[str]:
    counts, workers, hot = result["processes"], result["workers"], result["hot_poll"]

    def row(label: str, values: list[str]) -> str:
        return f"| {label} | {' | '.join(values)} |"

    return [
        f"## Scaling: 1 to {counts[-1]} processes ({result['cores']} cores here; counts above them are left out)", "",
        row("", [f"{n} process{'es' if n > 1 else ''}" for n in counts]), row("---", ["---"] * len(counts)),
        row(f"workers, {result['jobs']:,} trivial jobs, steady jobs/s: ours", [f"{v:,.0f}" for v in workers["ours"]]),
        row("Dramatiq 2.2 (its default threads)", [f"{v:,.0f}" for v in workers["dramatiq"]]),
        row("ours / Dramatiq", [ratio(o, d) for o, d in zip(workers["ours"], workers["dramatiq"], strict=True)]),
        row(f"hot poll req/s (`wrk -c32 -d{result['seconds']}s`): ours (granian, `WEB_CONCURRENCY`=N)",
            [f"{m['rps']:,.0f}" for m in hot["ours"]]),
        row("FastAPI/uvicorn (`--workers` N)", [f"{m['rps']:,.0f}" for m in hot["fastapi"]]),
        row("ours / FastAPI", [ratio(o["rps"], f["rps"]) for o, f in zip(hot["ours"], hot["fastapi"], strict=True)]),
        row("hot poll p99 ms: ours / FastAPI", [f"{o['p99']:.1f} / {f['p99']:.1f}"
                                                for o, f in zip(hot["ours"], hot["fastapi"], strict=True)]),
        "",
    ]  # fmt: skip


def charts(result: dict) -> list[Curves]:
    counts, workers, hot = result["processes"], result["workers"], result["hot_poll"]
    return [
        Curves("scaling_workers", "Workers: trivial jobs/s by worker processes", "jobs/s", "processes", counts,
               {"ours": workers["ours"], "Dramatiq": workers["dramatiq"]}),
        Curves("scaling_hot_poll", "Hot poll: req/s by web processes", "req/s", "processes", counts,
               {"ours": [m["rps"] for m in hot["ours"]], "FastAPI/uvicorn": [m["rps"] for m in hot["fastapi"]]}),
    ]  # fmt: skip
