"""Streamed outputs on the job service's side: each piece a handler yields, checked against the
limits, stored with its job and appended as an `output` event (output.lua, one round trip for
every job with news; or queued in the transaction that records the jobs' ends).

A job's output lives in its hash (`keys.OUTPUT_FIELD`: a JSON array; polls read it in the same
HMGET as the rest, so a job that streams nothing costs no command more) and expires with it; each
piece's event id is kept beside it (`keys.OUTPUT_IDS_FIELD`), so that a client resuming with
`Last-Event-ID` gets every piece it missed even after the stream dropped old entries. Limits,
per job: OUTPUT_PIECE_MAX_BYTES a piece (its JSON), OUTPUT_MAX_PIECES pieces and
OUTPUT_MAX_BYTES in all; past one, the job fails with an error naming the setting (what it
streamed before is kept).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

from factorize_app.jobs import events, keys, scripts
from factorize_app.jobs.connection import worker_server
from factorize_app.jobs.errors import translate_outages
from factorize_app.jobs.ids import task_type_of


class OutputLimitExceeded(Exception):
    """A piece over OUTPUT_PIECE_MAX_BYTES, or a job's output past OUTPUT_MAX_PIECES or
    OUTPUT_MAX_BYTES: the job fails with this message."""


class OutputNotJSON(TypeError):
    """A piece that is no JSON value."""


@dataclass
class OutputCount:
    """One job's output so far in this run: pieces and bytes (for its limits)."""

    pieces: int = 0
    bytes: int = 0

    def add(self, piece: Any) -> str:
        """The piece as JSON, counted; OutputLimitExceeded past a limit, OutputNotJSON if it is none."""
        try:
            text = json.dumps(piece, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise OutputNotJSON(f"output piece {self.pieces} is not a JSON value: {exc}") from None
        size = len(text.encode())
        if size > (most := settings.OUTPUT_PIECE_MAX_BYTES):
            raise OutputLimitExceeded(f"output piece {self.pieces}: {size} bytes, over OUTPUT_PIECE_MAX_BYTES ({most})")
        if self.pieces + 1 > settings.OUTPUT_MAX_PIECES:
            raise OutputLimitExceeded(f"output past OUTPUT_MAX_PIECES ({settings.OUTPUT_MAX_PIECES} pieces)")
        if self.bytes + size > settings.OUTPUT_MAX_BYTES:
            raise OutputLimitExceeded(f"output past OUTPUT_MAX_BYTES ({settings.OUTPUT_MAX_BYTES} bytes)")
        self.pieces += 1
        self.bytes += size
        return text


@dataclass(frozen=True)
class Pieces:
    """Pieces of one job not yet written: the index of the first, and each one's JSON."""

    first: int
    pieces: tuple[str, ...]


def _writes(pending: dict[str, Pieces]) -> dict[str, list[dict[str, Any]]]:
    """output.lua's arguments: each job's keys, and in the same order its write."""
    pending = {job_id: written for job_id, written in pending.items() if written.pieces}
    return {
        "jobs": [{"hash": keys.job(job_id), "events": keys.events(job_id)} for job_id in pending],
        "writes": [
            {"ttl": events.running_ttl(task_type_of(job_id)), "first": written.first, "pieces": list(written.pieces)}
            for job_id, written in pending.items()
        ],
    }


@translate_outages
def write_outputs(*, pending: dict[str, Pieces]) -> None:
    """Write running jobs' new pieces (job id -> Pieces) in one round trip (only for jobs still
    started: see output.lua)."""
    if any(written.pieces for written in pending.values()):
        scripts.OUTPUT(**_writes(pending), server=worker_server())


def queue_outputs(pipe: redis.client.Pipeline, pending: dict[str, Pieces]) -> None:
    """The same, queued on a pipeline (before the jobs' ends it records)."""
    if any(written.pieces for written in pending.values()):
        scripts.OUTPUT(pipe, **_writes(pending))
