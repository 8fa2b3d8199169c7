"""`make bench`: the service against the peers a user would pick, side by side in one run.

Starts the service as in production (scripts/serve.sh, real `manage.py rqworker` processes) on
the Redis database of BENCH_REDIS_URL (flushed between scenarios, no other), and the peers on it
too; runs the scenarios asked for (all by default; `make bench SCENARIOS="workers scaling"`), and
writes their results (bench/results.json, where the scenarios not run again keep their last
results unless --fresh), bench/RESULTS.md and the charts beside it
(bench/charts/). Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from bench import report, scenarios
from bench.context import Bench, Options, django_setup
from bench.measure import machine

HERE = Path(__file__).resolve().parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8, help="wrk duration per run")
    parser.add_argument("--jobs", type=int, default=10_000, help="trivial jobs per worker run")
    parser.add_argument("--e2e", type=int, default=5_000)
    parser.add_argument("--deep", type=int, default=100_000, help="queued jobs in the scale scenario")
    parser.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="scale every count by this (0.02: a quick run that only proves each scenario runs)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        nargs="*",
        default=[],
        help="the scaling scenario's process counts (default 1 2 4 8, as many as there are cores)",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        choices=scenarios.NAMES,
        default=list(scenarios.NAMES),
        metavar="SCENARIO",
        help=f"the scenarios to run, of: {' '.join(scenarios.NAMES)}",
    )
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="forget the earlier runs' results (kept by default for the scenarios not run again)",
    )
    parser.add_argument("--charts", type=Path, help="where the charts go (default: charts/ beside --output)")
    return parser.parse_args(argv)  # fmt: skip


def merged(kept: dict, run: dict, measured: dict, failed: list[str]) -> dict:
    """This run's results over those kept from earlier runs (the scenarios not run again)."""
    scenarios_kept = {name: result for name, result in kept.get("scenarios", {}).items() if name not in measured}
    runs = [{**old, "scenarios": [name for name in old["scenarios"] if name in scenarios_kept]}
            for old in kept.get("runs", [])]  # fmt: skip
    return {
        "runs": [old for old in runs if old["scenarios"]] + [run],
        "scenarios": {**scenarios_kept, **measured},
        "failed": failed,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    options = Options(runs=args.runs, seconds=args.seconds, jobs=args.jobs, e2e=args.e2e, deep=args.deep,
                      fraction=args.fraction, processes=tuple(args.processes))  # fmt: skip
    bench = Bench(options, os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"))
    django_setup(bench)
    run = {
        "machine": machine(bench.conn),
        "command": " ".join(["python -m bench", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": options.runs,
        "scenarios": [],
    }
    measured, failed = {}, []
    try:
        for name in args.only:
            print(f"bench: {name}", flush=True)
            try:
                measured[name] = json.loads(json.dumps(scenarios.load(name).run(bench)))  # as a record reads it
                run["scenarios"].append(name)
            except Exception as exc:  # one broken scenario must not lose the others' figures
                print(f"bench: {name} failed: {exc!r}", flush=True)
                failed.append(f"{name}: {exc!r}")
    finally:
        bench.flush()
    output = args.output.resolve()
    record = output.with_name("results.json")
    kept = {} if args.fresh or not record.exists() else json.loads(record.read_text())
    recorded = merged(kept, run, measured, failed)
    record.write_text(json.dumps(recorded, indent=1, ensure_ascii=False) + "\n")
    output = args.output.resolve()
    output.with_name("results.json").write_text(json.dumps(recorded, indent=1, ensure_ascii=False) + "\n")
    charts = report.write(recorded, output, (args.charts or output.parent / "charts").resolve())
    print(output.read_text())
    print("charts:", *(str(path) for path in charts))
