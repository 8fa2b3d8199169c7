"""Redis's command time split by what a job's steps do: SLOWLOG at a threshold of 0 logs every
command with its usec, those a script runs too (under client `?:0`, just before the script's own
entry), and those of a MULTI/EXEC (EXEC itself is never logged: its usec, which `INFO
commandstats` counts, are those of the commands it ran, added here again). The sums therefore
count as `INFO commandstats` counts: a script's usec include its commands', counted again.

Each entry goes to a step (the script that ran it, else its key) and to a feature (the keys it
touches: event streams, fair order's accounts), so that a feature's cost is the commands that
serve it, wherever they run."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict

import redis

STEPS = ("submit", "take", "record", "events", "lease", "heartbeat", "idle wait", "maintenance", "other")
SCRIPT_OWN = "the scripts' own time (Lua)"
FEATURES = ("events", "fair order", "progress", "stop and deadline", "RQ's registries and results", "core", SCRIPT_OWN)
_SCRIPT_STEP = {
    "poll": "submit", "after_enqueue": "submit", "budget": "submit", "take": "take", "finish": "record",
    "settle": "record", "rebalance": "record", "extend_lease": "lease", "progress": "record", "event": "events",
    "load": "maintenance", "tick": "maintenance", "sweep": "maintenance", "recount": "maintenance",
    "reconcile": "maintenance", "reconcile_event": "maintenance", "oldest_queued": "maintenance",
    "keep_owners": "record", "output": "events", "open_events": "events",
}  # fmt: skip
_SOURCE_NAME = re.compile(rb"-- (\w+)\.lua, as jobs/scripts\.py builds it")
SCRIPT_CLIENT = b"?:0"


def _prefixes() -> dict[str, tuple[str, ...]]:
    from factorize_app.jobs import keys

    return {
        "events": (keys.EVENTS_PREFIX, keys.EVENTS_WAKE_PREFIX),
        "fair order": (keys.FAIR_PREFIX,),
        "stop and deadline": (keys.STOP_PREFIX, keys.DEADLINES_PREFIX, keys.OWNERS_PREFIX),
        "RQ's registries and results": (keys.RESULTS_PREFIX, keys.STARTED_PREFIX, keys.EXECUTION_PREFIX,
                                        "rq:wip:", "rq:finished:", "rq:failed:", "rq:executions:"),  # fmt: skip
        "heartbeat": (keys.WORKER_PREFIX, keys.ALL_WORKERS, "rq:workers:"),
        "idle wait": (keys.WAKE_PREFIX,),
        "maintenance": (keys.CLEANING_PREFIX, keys.RECONCILE_PREFIX, keys.CLOCK, keys.OUTAGES, "rq:suspended"),
        "record": (keys.DURATION_PREFIX, keys.RESULTS_PREFIX, "rq:finished:", "rq:failed:"),
    }


def _script_names() -> dict[bytes, str]:
    from factorize_app.jobs import scripts

    return {hashlib.sha1(spec.source.encode()).hexdigest().encode(): name for name, spec in scripts.SCRIPTS.items()}


def start(conn: redis.Redis, entries: int = 2_000_000) -> None:
    conn.config_set("slowlog-max-len", entries)
    conn.config_set("slowlog-log-slower-than", 0)
    conn.slowlog_reset()


def collect(conn: redis.Redis) -> list[list]:
    """Every logged entry since `start`, oldest first, and logging off again."""
    conn.config_set("slowlog-log-slower-than", 10_000)
    entries = conn.execute_command("SLOWLOG", "GET", -1)
    conn.slowlog_reset()
    return sorted(entries, key=lambda entry: entry[0])


def split(entries: list[list], jobs: int) -> dict:
    """Calls and usec per job, by step and by feature."""
    prefixes, names = _prefixes(), _script_names()

    def starts(key: str, group: str) -> bool:
        return key.startswith(prefixes[group])

    def script_of(args: list[bytes]) -> str | None:
        command = args[0].lower()
        if command in (b"eval", b"evalsha") and len(args) > 1:
            if command == b"evalsha":
                return names.get(args[1], "unknown script")
            found = _SOURCE_NAME.search(args[1])
            return found[1].decode() if found else "unknown script"
        return None

    def key_step(command: str, key: str) -> str:
        for step in ("heartbeat", "idle wait", "maintenance", "record"):
            if starts(key, step):
                return step
        if starts(key, "events"):
            return "events"
        return "other"

    def feature(key: str, script: str | None) -> str:
        if script == "settle" or starts(key, "fair order"):
            return "fair order"
        if script == "progress":
            return "progress"
        for name in ("events", "stop and deadline", "RQ's registries and results"):
            if starts(key, name):
                return name
        return "core"

    steps: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    features: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    unplaced: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    by_command: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    by_script: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])  # a script's own usec, its commands'
    inner: list[list] = []  # a script's commands, logged before the script
    transaction: bytes | None = None  # the client whose EXEC's commands are being logged

    def add(step: str, group: str, calls: int, usec: float) -> None:
        steps[step][0] += calls
        steps[step][1] += usec
        features[group][0] += calls
        features[group][1] += usec

    for _id, _at, usec, args, client, *_ in entries:
        if client == SCRIPT_CLIENT:
            inner.append([usec, args])
            continue
        if client != transaction:
            transaction = None
        command = args[0].decode().lower()
        if command == "multi":
            transaction = client
        script = script_of(args)
        exec_again = 1 if transaction is not None and command != "multi" else 0  # EXEC's usec count it again
        if script is not None:
            step = _SCRIPT_STEP.get(script, "other")
            times = 2 + exec_again  # a command a script runs counts as itself and in the script's usec (and EXEC's)
            for inner_usec, inner_args in inner:
                by_command[f"{script}: {inner_args[0].decode().lower()}"][0] += 1
                by_command[f"{script}: {inner_args[0].decode().lower()}"][1] += inner_usec
                key = inner_args[1].decode(errors="replace") if len(inner_args) > 1 else ""
                add("events" if starts(key, "events") else step, feature(key, script), 1, inner_usec * times)
            own_usec = usec - sum(inner_usec for inner_usec, _ in inner)
            add(step, SCRIPT_OWN, 1, own_usec * (1 + exec_again))  # the script's call: Lua's own time
            by_script[script][0] += 1
            by_script[script][1] += own_usec
            by_script[script + " (its commands)"][0] += len(inner)
            by_script[script + " (its commands)"][1] += usec - own_usec
            inner = []
        else:
            key = args[1].decode(errors="replace") if len(args) > 1 else ""
            step = key_step(command, key) if command not in ("multi",) else "other"
            if command == "blpop":
                step = "idle wait"
            if step == "other" and command != "multi":
                shape = re.sub(r"[0-9a-f]{16,}|\d+", "*", key)
                unplaced[f"{command} {shape}"][0] += 1
                unplaced[f"{command} {shape}"][1] += usec
            add(step, feature(key, None), 1 + (command == "multi"), usec * (1 + exec_again))
    per_job = lambda table: {name: {"calls": c / jobs, "usec": u / jobs} for name, (c, u) in table.items()}  # noqa: E731
    return {
        "steps": per_job(steps),
        "features": per_job(features),
        "scripts": per_job(by_script),
        "commands": dict(sorted(per_job(by_command).items(), key=lambda kv: -kv[1]["usec"])[:12]),
        "unplaced": dict(sorted(per_job(unplaced).items(), key=lambda kv: -kv[1]["usec"])[:8]),
    }
