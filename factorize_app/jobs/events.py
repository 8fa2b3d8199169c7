"""Each job's event stream: what changed, pushed by whoever changed it, read without polling.

Every change of a job (taken by a worker, its progress, each piece of its streamed output, its
end, handed back to the queue, cancelled) is appended to a Redis Stream of its own
(`keys.events`), in the same round trip as the change itself, by one writer: the scripts'
`append_event.lua` (Python's own appends go through `event.lua`); but only once someone reads
the job's events. A reader's first look (`latest_event`, `events_after`, a webhook's subscription
through `open_events`) opens the stream, before it reads the job's state: every change after that
look is appended, so a stream or a webhook misses nothing, and a client reconnecting with
Last-Event-ID (an id it got from the stream, which was open then) is answered exactly. A job
nobody watches costs one EXISTS per change. The stream is capped (MAXLEN ~ EVENTS_MAXLEN) and
expires like the job. An entry carries what a status body needs beyond the job's input: the
status, the outcome JSON (once done), the progress JSON (while it runs), and an `output` event's
piece and index (its job keeps them too, with their ids: jobs/outputs.py); entry ids are the
event ids.

A web process reads every stream it serves with one blocking XREAD, in one dispatcher thread
(`watch`), which wakes the responses waiting on them: 1,000 open streams cost one Redis
connection, and an idle one costs nothing. It opens its streams again now and then
(REOPEN_SECONDS), so that one watched longer than its TTL stays open.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass

import redis
from django.conf import settings

from factorize_app.jobs import keys
from factorize_app.jobs.connection import (
    HOME,
    blocking_connection,
    redis_for_job,
    server_connection,
    server_of_job,
    servers,
)
from factorize_app.jobs.errors import JobNotFound, translate_outages
from factorize_app.jobs.ids import task_type_of
from factorize_app.jobs.states import STARTED, JobState
from factorize_app.tasks import TaskType

logger = logging.getLogger("factorize_app.jobs")

# Entries a job's stream keeps (about: Redis trims whole nodes). Progress comes at most a few
# times a second, so this is several seconds of it, and every status change of a short job.
EVENTS_MAXLEN = 50
# The id a streamed piece gets while nobody has opened its job's stream (no entry was written):
# below every id a client can resume from, so a resume never repeats it (the piece is in the state).
UNSENT_EVENT_ID = "0-0"
# Longest the dispatcher blocks before reading its set of streams again (a stream added while it
# blocks wakes it at once, through its wake-up stream).
DISPATCH_BLOCK_SECONDS = 5
# How often the dispatcher opens its watched jobs' streams again (open_events: their TTL kept).
REOPEN_SECONDS = 60
_EVENT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}", re.ASCII)  # matched whole (fullmatch)
_STREAM_ID_PART_LIMIT = 2**64  # Redis stream ids are two unsigned 64-bit integers
_LAST_EVENT_ID = f"{2**64 - 1}-{2**64 - 1}"


@dataclass(frozen=True)
class JobEvent:
    """One entry of a job's stream."""

    event_id: str
    status: str
    outcome: str  # JSON {"result": ...} or {"error": ...} once done, else ""
    progress: str  # JSON {"fraction", "message"} while started, else ""
    output: str = ""  # an `output` event's piece (JSON), else ""
    index: int = 0  # an `output` event's place in the job's output (0: a run's first piece)


def running_ttl(task_type: TaskType) -> int:
    """A running job's stream outlives its longest run and a queued wait after it (a retry)."""
    return int(task_type.setting("job_timeout")) + int(task_type.setting("job_ttl"))


def done_ttl(result_ttl: int) -> int:
    """A finished job's stream is kept for reconnecting clients, at most as long as its result."""
    return max(1, min(int(result_ttl), settings.EVENT_STREAM_RETENTION))


class InvalidEventId(ValueError):
    """A Last-Event-ID that is no stream entry id this service could have sent."""


def valid_event_id(text: str | None) -> str | None:
    """A client's Last-Event-ID as a stream entry id (`<ms>-<seq>`, each part below 2**64, in its
    canonical form: no leading zeros); None when absent or empty; else InvalidEventId. Redis
    answers an id past 64 bits with an error, so this is checked before asking it."""
    text = (text or "").strip()
    if not text:
        return None
    if not _EVENT_ID.fullmatch(text):
        raise InvalidEventId("not an event id: expected <milliseconds>-<sequence>, as the stream sent it")
    milliseconds, sequence = event_id_key(text)
    if milliseconds >= _STREAM_ID_PART_LIMIT or sequence >= _STREAM_ID_PART_LIMIT:
        raise InvalidEventId("not an event id: each part of <milliseconds>-<sequence> is below 2**64")
    return f"{milliseconds}-{sequence}"


def event_id_key(event_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = event_id.partition("-")
    return int(milliseconds), int(sequence)


def _open(pipe: redis.client.Pipeline, job_id: str, ttl: int | None = None) -> None:
    from factorize_app.jobs import scripts  # it imports this module

    try:
        lasts = running_ttl(task_type_of(job_id))
    except JobNotFound:  # not a job id of a known type: it has no events to keep for long
        lasts = settings.EVENT_STREAM_RETENTION
    scripts.OPEN_EVENTS(pipe, events=keys.events(job_id), ttl=max(lasts, ttl or 0))


@translate_outages
def open_events(*, job_ids: list[str], ttl: int | None = None) -> None:
    """From now on, append every change of these jobs to their streams (kept as long as a job of
    its type may still change, or `ttl` seconds if longer): what a reader does
    before it reads a job's state (a webhook's subscription; `latest_event` and `events_after`
    do it themselves)."""
    _open_all(job_ids, ttl)


def _open_all(job_ids: list[str], ttl: int | None = None) -> None:
    by_server: dict[str, list[str]] = {}
    for job_id in job_ids:
        by_server.setdefault(server_of_job(job_id), []).append(job_id)
    for server, ids in by_server.items():  # one pipeline per server
        with server_connection(server).pipeline(transaction=False) as pipe:
            for job_id in ids:
                _open(pipe, job_id, ttl)
            pipe.execute()


@translate_outages
def latest_event(*, job_id: str) -> JobEvent | None:
    """The job's newest event, None if its stream is empty or gone; its stream is open from now
    on (see the module's docstring)."""
    with redis_for_job(job_id).pipeline(transaction=False) as pipe:
        _open(pipe, job_id)
        pipe.xrevrange(keys.events(job_id), count=1)
        entries = pipe.execute()[-1]
    return parse_event(entries[0]) if entries else None


@translate_outages
def events_after(*, job_id: str, after: str) -> list[JobEvent]:
    """The job's events newer than `after`, oldest first (what a reconnecting client missed); its
    stream is open from now on. Its `output` events are read from the job's stored output, with
    their ids, so that none is lost when the stream (capped at EVENTS_MAXLEN) has dropped them;
    all are read in one round trip."""
    if after == _LAST_EVENT_ID:  # none can be newer, and Redis refuses the range after it
        _open_all([job_id])
        return []
    with redis_for_job(job_id).pipeline(transaction=True) as pipe:
        _open(pipe, job_id)
        pipe.xrange(keys.events(job_id), min=f"({after}", max="+")
        pipe.hmget(keys.job(job_id), keys.OUTPUT_FIELD, keys.OUTPUT_IDS_FIELD)
        entries, (output, ids) = pipe.execute()[-2:]
    events = [event for event in map(parse_event, entries) if not event.output]
    if output and ids:
        limit = event_id_key(after)
        pieces = json.loads(output)  # not orjson: integers beyond 64 bits stay exact
        stored = [
            JobEvent(event_id, STARTED, "", "", json.dumps(piece, separators=(",", ":")), index)
            for index, (event_id, piece) in enumerate(zip(ids.decode().split(), pieces, strict=False))
            if event_id_key(event_id) > limit
        ]
        events = sorted([*events, *stored], key=lambda event: event_id_key(event.event_id))
    return events


def state_after(state: JobState, event: JobEvent) -> JobState:
    """The job's state as of `event`, from a state of the same job (its input, its load). An
    `output` event sets its piece at its index (a run's first piece starts the output anew): the
    job was running then, with no result yet; its progress is left as it was."""
    if event.output:
        kept = (state.output or [])[: event.index]
        piece = json.loads(event.output)  # not orjson: integers beyond 64 bits stay exact
        return dataclasses.replace(state, status=STARTED, result=None, error=None, output=[*kept, piece])
    result = error = None
    if event.outcome:
        outcome = json.loads(event.outcome)  # not orjson: it reads integers beyond 64 bits as floats
        result, error = outcome.get("result"), outcome.get("error")
    progress = json.loads(event.progress) if event.progress and event.status == STARTED else None
    return dataclasses.replace(state, status=event.status, result=result, error=error, progress=progress)


class EventWatch:
    """One response's view of a job's stream, fed by the dispatcher: the events newer than the
    last one it was given, in order, each once."""

    def __init__(self, dispatcher: _Dispatcher, job_id: str, after: str, *, released: bool = False) -> None:
        self.job_id = job_id
        self._dispatcher = dispatcher
        self._after = event_id_key(after)
        self._pending: collections.deque[JobEvent] = collections.deque()
        self._ready = threading.Condition()
        self._closed = False
        self._released = released  # the server is stopping: wait() no longer blocks

    def deliver(self, events: list[JobEvent]) -> None:
        with self._ready:
            for event in events:
                key = event_id_key(event.event_id)
                if key > self._after:
                    self._pending.append(event)
                    self._after = key
            if self._pending:
                self._ready.notify_all()

    def release(self) -> None:
        """Make wait() return now, and never block again (see `release`)."""
        with self._ready:
            self._released = True
            self._ready.notify_all()

    def wait(self, timeout: float) -> list[JobEvent]:
        """The events that arrived, waiting up to `timeout` seconds for the first one (not at all
        once released)."""
        with self._ready:
            if not self._pending and not self._released:
                self._ready.wait(max(0.0, timeout))
            events = list(self._pending)
            self._pending.clear()
            return events

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._dispatcher.unwatch(self)


class _Dispatcher:
    """The web process's one reader of event streams per server: a thread blocked in one XREAD
    over every watched job's stream (from the oldest id any of its watchers still needs) and the process's
    wake-up stream, handing what it reads to the watchers of each job."""

    def __init__(self, server: str = HOME) -> None:
        self.server = server
        self._lock = threading.Lock()
        self._watches: dict[str, set[EventWatch]] = {}
        self._cursors: dict[str, str] = {}  # job id -> the id to read after
        self._wake_key = keys.events_wake(uuid.uuid4().hex)
        self._has_work = threading.Event()
        self._thread: threading.Thread | None = None
        self._released = False

    def watch(self, job_id: str, after: str) -> EventWatch:
        with self._lock:
            watch = EventWatch(self, job_id, after, released=self._released)
            watchers = self._watches.setdefault(job_id, set())
            watchers.add(watch)
            cursor = self._cursors.get(job_id)
            wake = cursor is None or event_id_key(after) < event_id_key(cursor)
            if wake:
                self._cursors[job_id] = after
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="event-dispatcher", daemon=True)
                self._thread.start()
        self._has_work.set()
        if wake:
            self._wake()
        return watch

    def release(self) -> None:
        """Wake every watch's wait, now and from now on (the server is stopping)."""
        with self._lock:
            self._released = True
            watches = [watch for watchers in self._watches.values() for watch in watchers]
        for watch in watches:
            watch.release()

    def unwatch(self, watch: EventWatch) -> None:
        with self._lock:
            watchers = self._watches.get(watch.job_id)
            if watchers is None:
                return
            watchers.discard(watch)
            if not watchers:
                del self._watches[watch.job_id]
                self._cursors.pop(watch.job_id, None)

    @property
    def watched(self) -> int:
        """How many responses are watching (for tests and logs)."""
        with self._lock:
            return sum(len(watchers) for watchers in self._watches.values())

    def _wake(self) -> None:
        """Make the dispatcher's blocked XREAD return, so it reads the new stream too. A refused
        write (Redis full or read-only) only delays that to the end of the current block."""
        try:
            with server_connection(self.server).pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {"w": 1}, maxlen=1)
                pipe.expire(self._wake_key, DISPATCH_BLOCK_SECONDS * 4)
                pipe.execute()
        except redis.exceptions.RedisError:
            pass

    def _run(self) -> None:
        failing = False
        reopen_at = time.monotonic() + REOPEN_SECONDS
        while True:
            with self._lock:
                streams = {keys.events(job_id): cursor for job_id, cursor in self._cursors.items()}
                if not streams:
                    self._has_work.clear()
            if not streams:
                self._has_work.wait()
                continue
            streams[self._wake_key] = "$"
            try:
                if time.monotonic() >= reopen_at:  # watched longer than their TTL: kept open
                    reopen_at = time.monotonic() + REOPEN_SECONDS
                    _open_all([name.removeprefix(keys.EVENTS_PREFIX) for name in streams
                               if name != self._wake_key])  # fmt: skip
                reply = blocking_connection(self.server).xread(streams, block=DISPATCH_BLOCK_SECONDS * 1000)
                if failing:
                    logger.info("event streams: Redis answers again")
                failing = False
            except redis.exceptions.RedisError as exc:
                if not failing:
                    logger.warning("event streams: cannot read from Redis", extra={"error": str(exc)})
                failing = True
                time.sleep(1.0)  # the responses' own polls notice a lasting outage and close
                continue
            for stream, entries in reply or []:
                name = stream.decode()
                if name == self._wake_key or not entries:
                    continue
                job_id = name.removeprefix(keys.EVENTS_PREFIX)
                events = [parse_event(entry) for entry in entries]
                with self._lock:
                    # Unless a new watcher moved the cursor back meanwhile (it reads from there next).
                    if self._cursors.get(job_id) == streams[name]:
                        self._cursors[job_id] = events[-1].event_id
                    watchers = list(self._watches.get(job_id, ()))
                for watch in watchers:
                    watch.deliver(events)


_dispatchers: dict[str, _Dispatcher] = {}
_dispatcher_pid = 0
_dispatcher_lock = threading.Lock()


def dispatcher(server: str = HOME) -> _Dispatcher:
    """This process's dispatcher of a server's streams (a forked child gets its own)."""
    global _dispatcher_pid
    with _dispatcher_lock:
        if _dispatcher_pid != os.getpid():
            _dispatchers.clear()
            _dispatcher_pid = os.getpid()
        if server not in _dispatchers:
            _dispatchers[server] = _Dispatcher(server)
        return _dispatchers[server]


def release_dispatchers() -> None:
    """Release every dispatcher's watches (see `release`), and those started later."""
    for server in servers():
        dispatcher(server).release()


def watch(*, job_id: str, after: str) -> EventWatch:
    """Watch a job's stream for events newer than `after`; close() the watch when done."""
    return dispatcher(server_of_job(job_id)).watch(job_id, after)


def parse_event(entry) -> JobEvent:
    """One entry of a job's stream, as XREAD and XRANGE answer it."""
    event_id, fields = entry
    return JobEvent(
        event_id=event_id.decode(),
        status=fields.get(b"status", b"").decode(),
        outcome=fields.get(b"outcome", b"").decode(),
        progress=fields.get(b"progress", b"").decode(),
        output=fields.get(b"output", b"").decode(),
        index=int(fields.get(b"index", b"0")),
    )


def is_new_output(state: JobState, event: JobEvent) -> bool:
    """An `output` event the state does not hold already (a client that was sent the state may
    then be sent the events written meanwhile: a piece it has, at its index, is not new)."""
    output = state.output or []
    return event.index >= len(output) or output[event.index] != json.loads(event.output)
