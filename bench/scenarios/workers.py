"""Trivial jobs/s (one INCR each), enqueued first, then drained by 1 and 2 processes; worker
start-up included: ours against RQ's SimpleWorker, Celery and Dramatiq."""

from __future__ import annotations

import statistics

from bench.charts import Bars
from bench.context import Bench
from bench.engines import ENGINES, drain_rate
from bench.measure import ratio


def run(bench: Bench) -> dict:
    count = bench.options.size(bench.options.jobs, 100)
    rates: dict[str, dict[str, float]] = {}
    for name in ENGINES:
        for processes in (1, 2):
            measured = [drain_rate(bench, name, count, processes) for _ in range(bench.options.runs)]
            rates.setdefault(name, {})[str(processes)] = statistics.median(measured)
            print(f"  workers {name} x{processes}: {rates[name][str(processes)]:.0f} jobs/s", flush=True)
    return {"jobs": count, "rates": rates}


def report(result: dict) -> list[str]:
    rates = result["rates"]
    lines = [f"## Workers: {result['jobs']:,} trivial jobs (one INCR each) enqueued, then drained; start-up included", "",
             "| engine | 1 process jobs/s | 2 processes jobs/s |", "|---|---|---|"]  # fmt: skip
    for key, engine in ENGINES.items():
        lines.append(f"| {engine.label} | {rates[key]['1']:,.0f} | {rates[key]['2']:,.0f} |")
    ours = rates["ours"]["2"]
    return [*lines, "", f"Ours with 2 processes: {ratio(ours, rates['dramatiq']['2'])} Dramatiq, "
                        f"{ratio(ours, rates['rq_simpleworker']['2'])} RQ SimpleWorker, "
                        f"{ratio(ours, rates['celery']['2'])} Celery.", ""]  # fmt: skip


def charts(result: dict) -> list[Bars]:
    groups = {f"{p} process{'es' if p != '1' else ''}": {ENGINES[key].label: result["rates"][key][p] for key in ENGINES}
              for p in ("1", "2")}  # fmt: skip
    return [Bars("workers", f"Workers: {result['jobs']:,} trivial jobs drained", "jobs/s", groups)]
