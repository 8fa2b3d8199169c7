"""Every Redis script of the job service, declared once: its KEYS and ARGV by name, in order.

A script is the file `<name>.lua` of this package. Its header names its keys and arguments in the
same words as its spec below (tests/test_lua_specs.py checks that they match):

    --- KEYS: job owners
    --- ARGV: job_id ttl ids*

The names, in order: `name`, one value; `name?`, one that may be left out (last of its list);
`names*`, the rest, a list of values; `group[a b]`, the rest, in groups of values (a group named
in both KEYS and ARGV is one: each of its items gives its keys and its arguments); `#group[a b]`,
a counted group (its count, then its items); `#name`, last in a group, a counted list.

A caller passes every name as a keyword (a list for `names*`, a list of dicts for a group), and
the spec builds the positional lists. The script reads them by name: `K.<key>`, `A.<argument>`
(written as their places, KEYS[n] and ARGV[n], into the source Redis runs), and a Lua list of the
same name for each list and group (read at its start). Likewise what it shares with Python
(`vocabulary`: field names, status words, key prefixes and constants) it names as `JOB.outcome`,
`STATUS.queued`, `PREFIX.events`, `EVENTS_MAXLEN`..., written in as their values: no script types
one, and naming costs Redis nothing. Helpers (`HELPERS`) define a local function of their name,
for the scripts that list them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rq.worker import WorkerStatus

from factorize_app.jobs import keys
from factorize_app.jobs.connection import HOME, OUTAGE_GAP, run_script, script
from factorize_app.jobs.events import EVENTS_MAXLEN, UNSENT_EVENT_ID
from factorize_app.jobs.states import ABORTED, CANCELED, FAILED, FINISHED, QUEUED, STARTED

HERE = Path(__file__).resolve().parent
HELPERS = ("clock_tick", "append_event", "last_event_status", "settle_accounts", "open_stream")
# What scripts answer beside data, for their callers to tell apart (ANSWER.<word> in Lua).
OK, THROTTLED = "ok", "throttled"  # poll.lua
MISSING, WITHDRAWN, STOPPING, DONE = "missing", "withdrawn", "stopping", "done"  # cancel.lua (or canceled)


def vocabulary() -> dict[str, dict[str, str] | str | int]:
    """What the scripts share with Python: tables of names (`JOB.outcome`), and constants."""
    return {
        "JOB": {
            **{field: field for field in keys.RQ_JOB_FIELDS},
            "outcome": keys.OUTCOME_FIELD,
            "client": keys.CLIENT_FIELD,
            "owner": keys.OWNER_FIELD,
            "state": keys.STATE_FIELD,
            "stop": keys.STOP_FIELD,
            "deadline": keys.DEADLINE_FIELD,
            "progress": keys.PROGRESS_FIELD,
            "output": keys.OUTPUT_FIELD,
            "output_ids": keys.OUTPUT_IDS_FIELD,
            "handed_back": keys.HANDED_BACK_FIELD,
        },
        "EXECUTION": {field: field for field in keys.RQ_EXECUTION_FIELDS},
        "WORKER": {field: field for field in keys.RQ_WORKER_FIELDS},
        "WORKER_STATE": {"busy": WorkerStatus.BUSY.value, "idle": WorkerStatus.IDLE.value},
        "EVENT": {field: field for field in keys.EVENT_FIELDS},
        "STATUS": {word: word for word in (QUEUED, STARTED, FINISHED, FAILED, CANCELED, ABORTED)},
        "ANSWER": {word: word for word in (OK, THROTTLED, MISSING, WITHDRAWN, STOPPING, DONE)},
        "PREFIX": {
            "job": keys.JOB_PREFIX,
            "execution": keys.EXECUTION_PREFIX,
            "results": keys.RESULTS_PREFIX,
            "events": keys.EVENTS_PREFIX,
            "owners": keys.OWNERS_PREFIX,
            "deadlines": keys.DEADLINES_PREFIX,
            "stop": keys.STOP_PREFIX,
        },
        "OUTAGE_GAP": OUTAGE_GAP,
        "EVENTS_MAXLEN": EVENTS_MAXLEN,
        "UNSENT_EVENT_ID": UNSENT_EVENT_ID,
        "RESULTS_MAXLEN": keys.RESULTS_MAXLEN,
        "WAKE_TOKENS": keys.WAKE_TOKENS,
        "FAIR_CLOCK": keys.FAIR_CLOCK,
        "NO_DEADLINE": keys.NO_DEADLINE,
        "STOP_REQUESTS_TTL": keys.STOP_REQUESTS_TTL,
    }


_TABLES = {name: value for name, value in vocabulary().items() if isinstance(value, dict)}
_SCALARS = {name: value for name, value in vocabulary().items() if not isinstance(value, dict)}


@dataclass(frozen=True)
class Item:
    """One name of a script's KEYS or ARGV: `kind` is one, optional, list, group or counted."""

    name: str
    kind: str
    members: tuple[str, ...] = ()  # a group's; "#name": a counted list

    @property
    def fixed(self) -> bool:
        return self.kind in ("one", "optional")


_ITEM = re.compile(r"(#?)(\w+)(?:\[([^\]]*)\])?([?*]?)")


def parse(text: str) -> tuple[Item, ...]:
    """The items of a KEYS or ARGV list written in the header's grammar."""
    items = []
    for token in re.findall(r"#?\w+\[[^\]]*\]|\S+", text):
        match = _ITEM.fullmatch(token)
        if match is None:
            raise ValueError(f"not a script item: {token!r}")
        count, name, members, suffix = match.groups()
        if members is not None:
            members = tuple(members.split())
            if any(m.startswith("#") for m in members[:-1]):
                raise ValueError(f"{token}: a counted list comes last in its group")
            items.append(Item(name, "counted" if count else "group", members))
        elif count:
            raise ValueError(f"{token}: only a group or a member of one is counted")
        else:
            items.append(Item(name, {"": "one", "?": "optional", "*": "list"}[suffix]))
    for index, item in enumerate(items):
        later = items[index + 1 :]
        if item.fixed and any(not other.fixed for other in items[:index]):
            raise ValueError(f"{item.name}: single values come before lists and groups")
        if item.kind == "optional" and later:
            raise ValueError(f"{item.name}?: an optional value comes last")
        if item.kind in ("list", "group") and later:
            raise ValueError(f"{item.name}: takes the rest, so comes last")
    return tuple(items)


class Script:
    """One script's spec: call it with every name as a keyword (`pipe` first to queue it on a
    pipeline); `on_thread` runs it on the calling thread's own connection (the hot path)."""

    def __init__(self, name: str, *, keys: str, args: str, helpers: tuple[str, ...] = ()) -> None:
        self.name, self.helpers = name, helpers
        self.keys, self.args = parse(keys), parse(args)
        items = (*self.keys, *self.args)
        # A group named in both KEYS and ARGV is one: each item gives its keys and its arguments.
        self.shared = {item.name for item in self.keys if item.members} & {item.name for item in self.args}
        if len(items) != len({item.name for item in items}) + len(self.shared):
            raise ValueError(f"{name}.lua: a name is given twice")
        self._members: dict[str, frozenset[str]] = {}
        for item in items:
            if item.members:
                if item.name in self.shared and item.kind != "group":
                    raise ValueError(f"{name}.lua: {item.name}, in KEYS and ARGV, takes the rest of both")
                members, known = {m.lstrip("#") for m in item.members}, self._members.get(item.name, frozenset())
                if len(members) < len(item.members) or members & known:
                    raise ValueError(f"{name}.lua: {item.name} names a member twice")
                self._members[item.name] = known | members
        self._names = frozenset(item.name for item in items)
        self._required = frozenset(item.name for item in items if item.kind != "optional")

    @functools.cached_property
    def source(self) -> str:
        """The script as Redis runs it: its helpers and body, their names resolved (`lua`)."""
        parts = [(HERE / f"{part}.lua").read_text() for part in (*self.helpers, self.name)]
        # Without its comment lines: a pipeline sends the source with every call (`__call__`).
        code = "".join(line for part in parts for line in part.splitlines(True) if not line.lstrip().startswith("--"))
        return f"-- {self.name}.lua, as jobs/scripts.py builds it\n" + self.lua(code)

    def lua(self, code: str) -> str:
        """`code` as Redis runs it: after the Lua reading its lists and groups, with each of its
        keys and arguments (`K.<name>`, `A.<name>`) at its place and each word of the vocabulary
        written in."""
        places = {
            "K": {item.name: f"KEYS[{n}]" for n, item in enumerate(self.keys, 1) if item.fixed},
            "A": {item.name: f"ARGV[{n}]" for n, item in enumerate(self.args, 1) if item.fixed},
            **{table: {name: _lua(value) for name, value in words.items()} for table, words in _TABLES.items()},
        }

        def place(match: re.Match) -> str:
            table, name = match.groups()
            if name not in places[table]:
                raise KeyError(f"{self.name}.lua reads {table}.{name}: not in its spec, nor in the vocabulary")
            return places[table][name]

        code = re.sub(rf"(?<![\w.])({'|'.join(places)})\.(\w+)", place, code)
        code = re.sub(rf"(?<![\w.])({'|'.join(_SCALARS)})\b", lambda match: _lua(_SCALARS[match[1]]), code)
        return self.reading() + code

    def __call__(self, pipe=None, /, *, server: str = HOME, **values: Any) -> Any:
        """On `pipe`'s Redis, else on `server`'s (connection.server_of: a type's)."""
        script_keys, args = self.build(values)
        if pipe is not None:
            # With the source (EVAL): a pipeline with registered scripts asks Redis whether they
            # exist (SCRIPT EXISTS) in a round trip of its own before it runs.
            return pipe.eval(self.source, len(script_keys), *script_keys, *args)
        return script(self.source, server)(keys=script_keys, args=args)

    def on_thread(self, *, server: str = HOME, **values: Any) -> Any:
        return run_script(self.source, *self.build(values), server=server)

    def call(self, server: str, **values: Any) -> tuple[str, str, list[Any], list[Any]]:
        """This call as `connection.run_scripts` takes it (several servers in one round trip)."""
        return (server, self.source, *self.build(values))

    def build(self, values: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        """The positional KEYS and ARGV for these named values."""
        if not self._required <= values.keys() <= self._names:
            missing, unknown = sorted(self._required - values.keys()), sorted(values.keys() - self._names)
            raise TypeError(f"{self.name}.lua: missing {missing}, unknown {unknown}")
        lists: tuple[list[Any], list[Any]] = ([], [])
        for out, items in zip(lists, (self.keys, self.args), strict=True):
            for item in items:
                value = values.get(item.name)
                if item.kind == "one":
                    out.append(value)
                elif item.kind == "optional":
                    out.extend(() if value is None else (value,))
                elif item.kind == "list":
                    out.extend(value)
                else:
                    if item.kind == "counted":
                        out.append(len(value))
                    for entry in value:
                        if entry.keys() != self._members[item.name]:
                            raise TypeError(f"{self.name}.lua: {item.name} items have {sorted(entry)}")
                        for member in item.members:
                            if member.startswith("#"):
                                out.append(len(entry[member[1:]]))
                                out.extend(entry[member[1:]])
                            else:
                                out.append(entry[member])
        return lists

    def reading(self) -> str:
        """The Lua that reads the lists and groups of KEYS and ARGV into Lua lists of their names."""
        lines = []
        shared = self.shared
        for array, items in (("KEYS", self.keys), ("ARGV", self.args)):
            fixed = [item for item in items if item.fixed]
            dynamic = [item for item in items if not item.fixed and item.name not in shared]
            if dynamic:
                lines.append(f"local {', '.join(item.name for item in dynamic)} = {', '.join('{}' for _ in dynamic)}\n")
                lines.append(f"do\n  local at = {len(fixed)}\n")
                lines += [_read(item, array) for item in dynamic]
                lines.append("end\n")
        for name in sorted(shared):
            key_item = next(item for item in self.keys if item.name == name)
            arg_item = next(item for item in self.args if item.name == name)
            fields = [f"{m} = KEYS[at_k + {n}]" for n, m in enumerate(key_item.members, 1)]
            fields += [f"{m} = ARGV[at_a + {n}]" for n, m in enumerate(arg_item.members, 1)]
            lines.append(
                f"local {name} = {{}}\ndo\n"
                f"  local at_k, at_a = {sum(i.fixed for i in self.keys)}, {sum(i.fixed for i in self.args)}\n"
                f"  while at_k < #KEYS do\n    {name}[#{name} + 1] = {{{', '.join(fields)}}}\n"
                f"    at_k, at_a = at_k + {len(key_item.members)}, at_a + {len(arg_item.members)}\n  end\nend\n"
            )
        return "".join(lines)


def _read(item: Item, array: str) -> str:
    """The Lua reading one list or group of `array` from its cursor `at`."""
    if item.kind == "list":
        return f"  for i = at + 1, #{array} do {item.name}[#{item.name} + 1] = {array}[i] end\n  at = #{array}\n"
    plain = [m for m in item.members if not m.startswith("#")]
    fields = ", ".join(f"{m} = {array}[at + {n}]" for n, m in enumerate(plain, 1))
    body = f"    local this = {{{fields}}}\n"
    step = str(len(plain))
    if len(plain) < len(item.members):  # a counted list closes the group
        listed = item.members[-1][1:]
        body += (
            f"    local n = tonumber({array}[at + {len(plain) + 1}])\n    this.{listed} = {{}}\n"
            f"    for j = 1, n do this.{listed}[j] = {array}[at + {len(plain) + 1} + j] end\n"
        )
        step = f"{len(plain) + 1} + n"
    body += f"    {item.name}[#{item.name} + 1] = this\n    at = at + {step}\n"
    if item.kind == "counted":
        return f"  at = at + 1\n  for _ = 1, tonumber({array}[at]) do\n{body}  end\n"
    return f"  while at < #{array} do\n{body}  end\n"


def _lua(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def header(path: Path) -> tuple[tuple[Item, ...], tuple[Item, ...]] | None:
    """A `.lua` file's KEYS and ARGV as its header names them (None: it has no header)."""
    text = " ".join(line[3:].strip() for line in path.read_text().splitlines() if line.startswith("---"))
    match = re.fullmatch(r"KEYS:(.*)ARGV:(.*)", text)
    return (parse(match[1]), parse(match[2])) if match else None


_CLOCK = ("clock_tick",)
CLOCK_KEYS = {"clock": keys.CLOCK, "outages": keys.OUTAGES}  # for the scripts that tick the clock

# The web's side (jobs/submit.py, status.py, control.py, budgets.py; keep_owners: result_files.py).
POLL = Script(
    "poll",
    helpers=(*_CLOCK, "append_event", "open_stream"),
    keys="pending started throttle clock outages aborted canceled waiting used",
    args="job_ttl limit window cost failure_ttl aborted_outcome events_ttl owners_ttl claim claim_after check "
    "clients_prefix open_ttl ids*",
)
AFTER_ENQUEUE = Script(
    "after_enqueue",
    keys="pending waiting used client_list wake caps",
    args="owner client cap job_ttl cancel_after ids*",
)
CANCEL = Script(
    "cancel",
    helpers=("append_event",),
    keys="job owners deadlines pending inputs canceled events",
    args="job_id caller reason ended_at outcome failure_ttl events_ttl clients_prefix",
)
KEEP_OWNERS = Script("keep_owners", keys="job owners deadlines", args="ttl")
BUDGET = Script("budget", keys="slots*", args="charge budget target expires")
# The worker's side (jobs/worker_side.py).
TAKE = Script(
    "take",
    helpers=(*_CLOCK, "append_event"),
    keys="worker clock outages suspended executions "
    "queues[list workers started pending inputs waiting used running caps]",
    args="count lease worker_name stamp execution_id fair queues[name clients estimate cap events_ttl]",
)
EXTEND_LEASE = Script("extend_lease", keys="jobs[started execution]", args="lease jobs[member]")
PROGRESS = Script("progress", helpers=("append_event",), keys="jobs[hash events]", args="jobs[progress ttl]")
OUTPUT = Script("output", helpers=("append_event",), keys="jobs[hash events]", args="writes[ttl first #pieces]")
FINISH = Script(
    "finish",
    helpers=("append_event", "settle_accounts"),
    keys="executions worker started snapshot durations waiting used running holders",
    args="ended_at idle clients_prefix successful failed working_time #histogram[field value] "
    "#accounts[client running use] jobs[id status state outcome ttl events_ttl registry also execution score #entry]",
)
EVENT = Script("event", helpers=("append_event",), keys="events", args="ttl status outcome progress")
OPEN_EVENTS = Script("open_events", helpers=("open_stream",), keys="events", args="ttl")
SETTLE = Script(
    "settle",
    helpers=("settle_accounts",),
    keys="waiting used running holders",
    args="clients_prefix worker #accounts[client running use] handed_back[client id]",
)
REBALANCE = Script("rebalance", keys="holders waiting workers used running job", args="worker client started ran grace")
# Monitoring and maintenance (jobs/monitoring.py, maintenance.py, reconcile.py).
LOAD = Script("load", keys="pending started clock outages workers?", args="")
TICK = Script("tick", helpers=_CLOCK, keys="clock outages", args="")
SWEEP = Script("sweep", helpers=_CLOCK, keys="pending inputs clock outages", args="outage_start job_ttl limit")
RECOUNT = Script("recount", keys="started running", args="")
RECONCILE = Script(
    "reconcile",
    helpers=("append_event", "last_event_status"),
    keys="lock snapshot started pending inputs list cursors",
    args="lock_ms chunk tail job_ttl",
)
OLDEST_QUEUED = Script("oldest_queued", keys="list", args="limit")
RECONCILE_EVENT = Script(
    "reconcile_event", helpers=("append_event", "last_event_status"), keys="job events", args="status outcome ttl"
)

SCRIPTS = {spec.name: spec for spec in globals().values() if isinstance(spec, Script)}
