"""Redis's cost of a job: `INFO commandstats` (calls and usec, after CONFIG RESETSTAT) and Redis's
CPU while 2 worker processes drain 10,000 queued trivial jobs, ours against Dramatiq, on a
redis-server of the scenario's own (the shared one's statistics count every other client's
commands). The submits are counted apart: ours through `POST /bench-incr/batch` (chunks of 500),
Dramatiq's `send()` in a process of its own.

As in Redis's own statistics, a script's usec include those of the commands it runs, which are
counted again under their own names: the sum is Redis's command time as the issue measured it,
the CPU figure what the server spent in all."""

from __future__ import annotations

import shutil
import subprocess
import time

import redis
import requests

from bench import redis_phases
from bench.charts import Bars
from bench.context import BIN, Bench
from bench.engines import ENGINES
from bench.measure import ratio
from tests.processes import PYTHON, ROOT, free_port

OWN_COMMANDS = {
    "info",
    "config|resetstat",
}  # the bench's own statistics (its polls of the counter, a GET each 20 ms, stay)
TOP = 6  # commands shown per engine
ENQUEUE_DRAMATIQ = (
    "import sys\nfrom bench.peers.dramatiq_app import incr\nfor _ in range(int(sys.argv[1])): incr.send()"
)


def command_stats(conn: redis.Redis) -> dict[str, dict[str, float]]:
    """calls and usec per command since the last CONFIG RESETSTAT, the bench's own left out."""
    stats = {name.removeprefix("cmdstat_"): value for name, value in conn.info("commandstats").items()}
    return {name: {"calls": v["calls"], "usec": v["usec"]} for name, v in stats.items() if name not in OWN_COMMANDS}


def cpu_seconds(conn: redis.Redis) -> float:
    cpu = conn.info("cpu")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def measure(bench: Bench, count: int, step) -> dict:
    """The commands, usec and CPU of `step()` per job."""
    bench.conn.config_resetstat()
    cpu = cpu_seconds(bench.conn)
    step()
    stats = command_stats(bench.conn)
    return {
        "calls": sum(v["calls"] for v in stats.values()) / count,
        "usec": sum(v["usec"] for v in stats.values()) / count,
        "cpu_usec": (cpu_seconds(bench.conn) - cpu) * 1e6 / count,
        "top": dict(sorted(((name, {"calls": v["calls"] / count, "usec": v["usec"] / count})
                            for name, v in stats.items()), key=lambda kv: -kv[1]["usec"])[:TOP]),
    }  # fmt: skip


def submit_ours_of(own: Bench, count: int) -> None:
    with own.web_server() as base:
        for start in range(0, count, 500):
            items = [{"i": i} for i in range(start, min(count, start + 500))]
            answer = requests.post(f"{base}/bench-incr/batch", json={"items": items}, timeout=120)
            assert answer.status_code in (200, 202), answer.text


def steps(own: Bench, count: int, submit, processes: int) -> dict:
    """Ours again, fewer jobs, every command logged (SLOWLOG at 0 µs): the cost of each step of
    a job and of each feature, per job (bench/redis_phases.py)."""
    own.flush()
    redis_phases.start(own.conn)
    submit(own, count)
    submitted = redis_phases.split(redis_phases.collect(own.conn), count)
    redis_phases.start(own.conn)
    procs = ENGINES["ours"].start(own, processes)
    try:
        own.wait_for_counter(count)
    finally:
        own.stop(procs)
    drained = redis_phases.split(redis_phases.collect(own.conn), count)
    return {"jobs": count, "submit": submitted, "drain": drained}


def run(bench: Bench) -> dict:
    count, processes = bench.options.size(10_000, 200), 2
    server = shutil.which("redis-server") or str(BIN / "redis-server")  # as scripts/ensure-redis.sh
    port = free_port()
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(ROOT / ".run")]  # fmt: skip
    own = bench.on(f"redis://127.0.0.1:{port}/0")

    def answers() -> bool:
        try:
            return bool(own.conn.ping())
        except redis.RedisError:
            return False

    results = {}
    with bench.running(args, ready=answers):

        def submit_ours() -> None:
            submit_ours_of(own, count)

        def submit_dramatiq() -> None:
            subprocess.run([PYTHON, "-c", ENQUEUE_DRAMATIQ, str(count)], cwd=ROOT, env=own.env, check=True)

        rounds: dict[str, list[dict]] = {"ours": [], "dramatiq": []}
        for _ in range(bench.options.runs):  # alternating: both sides see the machine's same moments
            for engine, submit in (("ours", submit_ours), ("dramatiq", submit_dramatiq)):
                own.flush()
                submitted = measure(own, count, submit)
                procs = []

                def drain(engine=engine, procs=procs) -> None:
                    procs.extend(ENGINES[engine].start(own, processes))
                    own.wait_for_counter(count)

                started = time.monotonic()
                try:
                    drained = measure(own, count, drain)
                finally:
                    own.stop(procs)
                rounds[engine].append({"submit": submitted, "drain": drained, "seconds": time.monotonic() - started})
                print(f"  redis cost {engine}: {drained['usec']:.0f} µs, {drained['calls']:.1f} commands per job",
                      flush=True)  # fmt: skip
        for engine, runs in rounds.items():  # the median run by command time (a preempted Redis inflates usec)
            results[engine] = sorted(runs, key=lambda run: run["drain"]["usec"])[len(runs) // 2]
            results[engine]["usec_runs"] = [round(run["drain"]["usec"], 1) for run in runs]
        results["ours"]["steps"] = steps(own, bench.options.size(2_000, 200), submit_ours_of, processes)
    return {"jobs": count, "processes": processes, **results}


def report(result: dict) -> list[str]:
    ours, peer = result["ours"], result["dramatiq"]
    lines = [
        f"## Redis's cost of a job: {result['jobs']:,} queued trivial jobs drained by {result['processes']} worker processes",
        "",
        "Per job, from `INFO commandstats` after `CONFIG RESETSTAT` (a script's usec include its commands', "
        "which are counted again on their own) and Redis's CPU; a redis-server of the scenario's own.",
        "",
        "| | drain: commands | drain: command µs | drain: Redis CPU µs | drain: jobs/s | submit: commands "
        "| submit: command µs |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, side in (("ours", ours), ("Dramatiq 2.2", peer)):
        d, s = side["drain"], side["submit"]
        rate = f"{result['jobs'] / side['seconds']:,.0f}"
        lines.append(f"| {label} | {d['calls']:.1f} | {d['usec']:.0f} | {d['cpu_usec']:.0f} | {rate} | {s['calls']:.1f} "
                     f"| {s['usec']:.0f} |")  # fmt: skip
    d, pd = ours["drain"], peer["drain"]
    if "usec_runs" in ours:
        lines += ["", f"The median of {len(ours['usec_runs'])} alternating runs by command time (each run's µs per job: "
                      f"ours {ours['usec_runs']}, Dramatiq {peer['usec_runs']}); on a machine whose cores other work "
                      f"shares, a command Redis is preempted in counts the wait."]  # fmt: skip
    lines += ["", f"Ours / Dramatiq, draining: {ratio(d['usec'], pd['usec'])} the command time, "
                  f"{ratio(d['calls'], pd['calls'])} the commands, {ratio(d['cpu_usec'], pd['cpu_usec'])} Redis's CPU "
                  f"(goal: ≤ 1.00× the command time).", ""]  # fmt: skip
    for label, side in (("ours", ours), ("Dramatiq", peer)):
        top = ", ".join(f"`{name}` {v['calls']:.1f} × {v['usec'] / max(v['calls'], 1e-9):.1f} µs"
                        for name, v in side["drain"]["top"].items())  # fmt: skip
        lines.append(f"- {label}, the costliest commands while draining, per job: {top}.")
    return [*lines, "", *step_lines(ours.get("steps"))]


def step_lines(steps: dict | None) -> list[str]:
    """Ours, step by step and feature by feature (bench/redis_phases.py)."""
    if not steps:
        return []
    lines = [
        f"### Ours, step by step ({steps['jobs']:,} jobs again, every command logged by `SLOWLOG` at 0 µs)",
        "",
        "Per job, counted as `INFO commandstats` counts (a script's or an EXEC's usec include its commands', "
        "which count again). Logging every command slows Redis a little: these µs run above the table's; "
        "their shares are the point. A step is the script (or the key) that runs a command; a feature, the "
        "keys it touches wherever it runs.",
        "",
        "| step | commands | command µs |",
        "|---|---|---|",
    ]
    rows = [("submit (all of it)", _total(steps["submit"]["steps"]))]
    rows += [(name, steps["drain"]["steps"][name]) for name in redis_phases.STEPS if name in steps["drain"]["steps"]]
    rows.append(("draining (all of it)", _total(steps["drain"]["steps"])))
    lines += [f"| {name} | {v['calls']:.2f} | {v['usec']:.1f} |" for name, v in rows]
    lines += ["", "| feature, while draining | commands | command µs |", "|---|---|---|"]
    features = steps["drain"]["features"]
    lines += [f"| {name} | {features[name]['calls']:.2f} | {features[name]['usec']:.1f} |"
              for name in redis_phases.FEATURES if name in features]  # fmt: skip
    return [*lines, ""]


def _total(table: dict) -> dict:
    return {"calls": sum(v["calls"] for v in table.values()), "usec": sum(v["usec"] for v in table.values())}


def charts(result: dict) -> list[Bars]:
    sides = {"ours": result["ours"], "Dramatiq": result["dramatiq"]}
    return [Bars("redis_cost", "Redis's cost per job, draining (2 worker processes)", "µs per job",
                 {"command time": {label: side["drain"]["usec"] for label, side in sides.items()},
                  "Redis CPU": {label: side["drain"]["cpu_usec"] for label, side in sides.items()}})]  # fmt: skip
