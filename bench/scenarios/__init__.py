"""The benchmark's scenarios, one module each, run and reported in this order.

A scenario module has:
- `run(bench: bench.context.Bench) -> dict`: measures, and answers its result as plain JSON
  values (str keys); sizes from `bench.options` (`options.size(n)` scales a count by --fraction);
- `report(result: dict) -> list[str]`: its section of bench/RESULTS.md (Markdown lines), from
  the result alone (a recorded one too: tests/test_bench.py renders each from
  tests/bench_results.json);
- optionally `charts(result: dict) -> list[bench.charts.Bars | bench.charts.Curves]`: its charts
  (labels of ours start with "ours"), drawn beside RESULTS.md and shown under its section.
"""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES = (
    "hot_path", "workers", "end_to_end", "fairness", "fairness_varied", "digits", "stop_latency", "batch_polls", "latency",
    "scale", "warm", "fair_drain", "take_cost", "webhooks", "streams", "scaling", "redis_cost", "handler_speed",
    "files",
    "streamed_outputs",
)  # fmt: skip


def load(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")
