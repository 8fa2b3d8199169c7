"""`GET /jobs/<id>` with `Accept: text/event-stream`: the job's status, pushed as it changes.

Server-sent events: an `event: status` with the full status body (what `GET /jobs/<id>` answers)
at once, then one per change (started, each progress report, done) read from the job's event
stream through the process's one dispatcher, and an `event: output` for each piece a streaming
job yields (`{"job_id", "index", "output": <piece>}`; its status bodies hold the pieces so far as
`output`); the response ends after the done event. Each event's
`id:` is its stream entry id: a client reconnecting with `Last-Event-ID` gets the events it missed,
then the live tail (and 204, which tells EventSource to stop, once it has seen the end). A comment
every EVENT_STREAM_KEEPALIVE seconds keeps idle connections open and finds clients that left.

While open, the response polls the job every half JOB_TTL, as a polling client would: that keeps
a queued job alive and refreshes `load`. Changes RQ's own tools make (its cleanup failing a job
whose worker died, `rq requeue`) get their events, with ids, from `jobs.reconcile`, which the
workers run every second and each open stream at every keep-alive (in case none does). Each
stream holds a server thread (WSGI), so a process serves at most EVENT_STREAMS_MAX of them and
answers 503 beyond, leaving threads for polls; and a client at its MAX_HELD_PER_CLIENT, or any
client while the process holds MAX_HELD_REQUESTS requests (streams, long polls and waiting
submits together: api/request_options.py), gets the job's state and the end of the stream at once (with a
`retry:` for its reconnection), not a held one. A server that is stopping (api/shutdown.py)
ends its streams the same way, at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings

from factorize_app import jobs
from factorize_app.api.request_options import HELD
from factorize_app.api.responses import base_url
from factorize_app.api.shutdown import draining
from factorize_app.tasks import get_task_type

EVENT_STREAM = "text/event-stream"
KEEP_ALIVE = b": keep-alive\n\n"
# What a stream answered at once (its client holds too many) tells EventSource: reconnect in 5 s.
RECONNECT_LATER = b"retry: 5000\n\n"


def reconnect_soon() -> bytes:
    """What a stopping server's streams end with: reconnect after POLL_RETRY_AFTER (to another
    server), as a poll answered by it is told by its `Retry-After`."""
    return f"retry: {settings.POLL_RETRY_AFTER * 1000}\n\n".encode()


class EventStreamRenderer(BaseRenderer):
    """Lets DRF's content negotiation accept `text/event-stream` for the job view, which then
    answers with a stream of its own; anything else it would render (an error) is rendered as JSON
    by `open_stream` first switching the request to JSON."""

    media_type = EVENT_STREAM
    format = "event-stream"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None) -> bytes:
        return JSONRenderer().render(data)


# The job view's renderers: the API's own, and the event stream's.
JOB_RENDERERS = [*api_settings.DEFAULT_RENDERER_CLASSES, EventStreamRenderer]


def errors_as_json(request) -> None:
    """An error answers as JSON even to a request that negotiated an event stream (say, a 401
    before the view runs): the stream's renderer would label a JSON body text/event-stream."""
    if isinstance(getattr(request, "accepted_renderer", None), EventStreamRenderer):
        request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type


def wants_stream(request) -> bool:
    """The request negotiated to `text/event-stream` (its Accept header, or ?format=event-stream)."""
    return getattr(request, "accepted_media_type", "") == EVENT_STREAM


class _Slots:
    """Open streams in this process, bounded by EVENT_STREAMS_MAX."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.open = 0

    def take(self) -> bool:
        with self._lock:
            if self.open >= settings.EVENT_STREAMS_MAX:
                return False
            self.open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.open -= 1


SLOTS = _Slots()


NO_CONTENT = object()  # what `stream_of` answers to a client that has seen a job's end


def open_stream(request, job_id: str, *, client: str, owner: str = "") -> HttpResponse | Response:
    """The event-stream response for a job, or the usual error answer (404 JSON, 503 JSON), for
    `client` (held as one of its requests); with `owner`, a job it does not own is a 404."""
    # Errors below (an unknown job, Redis down) are answered as JSON, not as an event stream.
    request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
    try:
        after = jobs.valid_event_id(request.META.get("HTTP_LAST_EVENT_ID"))
    except ValueError as exc:  # malformed, or past 64 bits (which Redis would answer with an error)
        raise ValidationError({"Last-Event-ID": [str(exc)]}) from None
    stream = stream_of(job_id, after, client=client, owner=owner, base=base_url(request))
    if stream is NO_CONTENT:
        return HttpResponse(status=status.HTTP_204_NO_CONTENT)  # it has seen the end
    if stream is None:
        return Response(
            {"detail": "Too many open event streams on this server; poll instead, or try again shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    response = StreamingHttpResponse(stream, content_type=EVENT_STREAM)
    for name, value in STREAM_HEADERS:
        response[name] = value
    return response


# What every event-stream response carries besides its content type.
STREAM_HEADERS = (("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no"))  # nginx: pass each event on at once


def stream_of(
    job_id: str,
    after: str | None,
    *,
    client: str,
    owner: str = "",
    rate_limit: jobs.RateLimit | None = None,
    base: str = "",
):
    """The body of a job's event stream for `client` after event `after` (None: from its current
    state), held as one of its requests; NO_CONTENT when it has seen the job's end; None when the
    process serves EVENT_STREAMS_MAX streams. With `rate_limit`, the request is counted in the
    job's poll; `base`, the request's scheme and host, for the URLs of the job's files. Raises what
    jobs.get_status raises (JobNotFound, QueueUnavailable, Throttled)."""
    if after is None:
        # The state and the newest event's id of one instant (its stream opened first): nothing between is lost.
        state, latest_id = jobs.open_status(job_id=job_id, owner=owner, rate_limit=rate_limit)
        first, cursor = [(state, latest_id, None)], latest_id or "0-0"
    else:
        state = jobs.get_status(job_id=job_id, owner=owner, rate_limit=rate_limit)
        missed = jobs.events_after(job_id=job_id, after=after)
        if not missed and state.done:
            latest = jobs.latest_event(job_id=job_id)
            if latest is not None and latest.status == state.status:
                return NO_CONTENT
        first, cursor = [], after
        for event in missed:  # (the outputs among them read from the job: none lost to the stream's cap)
            state = jobs.state_after(state, event)
            first.append((state, event.event_id, event if event.output else None))
            cursor = event.event_id
            if state.done:
                break
        if not missed and state.done:  # its stream has expired: the end, without an id
            first.append((state, None, None))
    if not SLOTS.take():
        return None
    held = not draining() and HELD.take(client)
    if not held:
        SLOTS.give_back()
        first = first or [(state, None, None)]
    return _EventStream(job_id, state, first, cursor, client=client if held else None, base=base)


class _EventStream:
    """The response body: an iterable whose close() (called by the server when the response ends
    or the client leaves) releases the dispatcher's watch and the process's slot."""

    def __init__(
        self, job_id: str, state: jobs.JobState, first: list, cursor: str, *, client: str | None, base: str = ""
    ) -> None:
        self.job_id, self.state, self.first, self.cursor = job_id, state, first, cursor
        self.base = base  # the request's scheme and host, for the URLs of the job's files
        self.client = client  # the holder of this stream; None: answered at once, not held
        self._watch: jobs.EventWatch | None = None
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        task_type = get_task_type(self.state.task_name)
        body = functools.partial(jobs.status_body, task_type, base_url=self.base)
        sent = None
        for state, event_id, output in self.first:
            yield _format_output(self.job_id, output) if output else _format(body(state), event_id)
            sent = state
        if sent is not None and sent.done:
            return
        if self.client is None:
            yield reconnect_soon() if draining() else RECONNECT_LATER
            return
        self._watch = jobs.watch_events(job_id=self.job_id, after=self.cursor)
        base = self.state
        keepalive = settings.EVENT_STREAM_KEEPALIVE
        resync = max(1.0, task_type.setting("job_ttl") / 2)
        next_keepalive, next_poll = time.monotonic() + keepalive, time.monotonic() + resync
        while True:
            arrived = self._watch.wait(min(next_keepalive, next_poll) - time.monotonic())
            for event in self._outputs_whole(base, arrived):
                if jobs.event_id_key(event.event_id) <= jobs.event_id_key(self.cursor):
                    continue  # sent already (read again with the pieces a gap had dropped)
                self.cursor = event.event_id
                if event.output and not jobs.is_new_output(base, event):
                    continue  # in the state first sent already
                base = jobs.state_after(base, event)
                if event.output:
                    yield _format_output(self.job_id, event)
                else:
                    yield _format(body(base), event.event_id)
                next_keepalive = time.monotonic() + keepalive
                if base.done:
                    return
            if draining():  # the server is stopping: the state as it stands (no id: no new entry), and goodbye
                yield _format(body(base), None)
                yield reconnect_soon()
                return
            now = time.monotonic()
            if now >= next_keepalive:
                with contextlib.suppress(jobs.QueueUnavailable):
                    jobs.reconcile()  # its event, if RQ changed the job: read next round
            if now >= next_poll:
                next_poll = now + resync
                try:
                    polled = jobs.get_status(job_id=self.job_id)  # keeps a queued job alive
                except (jobs.JobNotFound, jobs.QueueUnavailable):
                    return  # gone, or Redis is: the client reconnects (and gets a 404 or a 503)
                changed = polled.status != base.status
                base = polled if changed else dataclasses.replace(base, load=polled.load)
                if changed:  # a change nobody pushed: sent without an id (it is no stream entry)
                    yield _format(body(polled), None)
                    next_keepalive = now + keepalive
                    if polled.done:
                        return
            if now >= next_keepalive:
                yield KEEP_ALIVE
                next_keepalive = now + keepalive

    def _outputs_whole(self, base: jobs.JobState, events: list[jobs.JobEvent]) -> list[jobs.JobEvent]:
        """The events, or, if an output piece is missing before one of them (the stream, capped,
        dropped entries before the dispatcher read them), every event after the last one sent,
        the pieces read from the job."""
        held = len(base.output or [])
        for event in events:
            if event.output:
                if event.index > held:
                    with contextlib.suppress(jobs.QueueUnavailable):
                        return jobs.events_after(job_id=self.job_id, after=self.cursor)
                    return events
                held = event.index + 1
        return events

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watch is not None:
            self._watch.close()
        if self.client is not None:
            SLOTS.give_back()
            HELD.give_back(self.client)


def _format_output(job_id: str, event: jobs.JobEvent) -> bytes:
    """An `output` event: the piece (its JSON as stored) and its index."""
    data = f'{{"job_id":{json.dumps(job_id)},"index":{event.index},"output":{event.output}}}'
    return f"event: output\nid: {event.event_id}\ndata: {data}\n\n".encode()


def _format(body: dict[str, Any], event_id: str | None) -> bytes:
    data = json.dumps(body, separators=(",", ":"))  # one line; integers of any size stay exact
    head = f"event: status\nid: {event_id}\n" if event_id else "event: status\n"
    return f"{head}data: {data}\n\n".encode()
