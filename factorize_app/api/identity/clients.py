"""A client (whoever calls the HTTP API) as the job service counts it: its identity, its address
(a trusted proxy's header, else the connection), and what it may see of others' jobs and its caps:
one rule for the DRF views and the lean lane."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from factorize_app import jobs


@dataclass(frozen=True)
class ClientIdentity:
    """A client as the job service counts it: `name` keys fair order, rate limits and caps."""

    name: str
    key_id: int | None = None
    staff: bool = False
    max_queued: int | None = None  # a key's own caps; None: the settings' per-client defaults
    max_running: int | None = None
    max_redis_bytes: int | None = None


def anonymous(meta) -> ClientIdentity:
    """A client without a key or a login, known by its address."""
    return ClientIdentity(name="address-" + client_address(meta))


def client_address(meta) -> str:
    """The connection's address or, when the connection comes from one of TRUSTED_PROXIES, the
    client address that CLIENT_IP_HEADER carries.

    Anyone can send any X-Forwarded-For: the header is believed only from a trusted proxy. Each
    proxy appends the address it saw, so the entries are read from the right, skipping trusted
    proxies (a chain of them); the first other address is the client. A value that is not an IP
    address is never a client name (it would key rate buckets and fair-order turns).
    """
    remote = meta.get("REMOTE_ADDR", "") or "unknown"
    header = settings.CLIENT_IP_HEADER
    if not header or not _trusted(remote):
        return remote
    entries = meta.get("HTTP_" + header.upper().replace("-", "_"), "").split(",")
    for entry in reversed(entries[-16:]):  # a chain longer than 16 proxies is not a real one
        address = entry.strip()
        if not _is_address(address):
            return remote
        if not _trusted(address):
            return address
    return remote


def request_client_address(request) -> str:
    """client_address of a Django request (django-axes' AXES_CLIENT_IP_CALLABLE)."""
    return client_address(request.META)


def _trusted(address: str) -> bool:
    if not settings.TRUSTED_PROXIES or not _is_address(address):
        return False
    ip = ipaddress.ip_address(address)
    return any(ip in network for network in settings.TRUSTED_PROXIES)


def _is_address(text: str) -> bool:
    if len(text) > 45:  # the longest textual IPv6 address
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def reading_owner(identity: ClientIdentity) -> str:
    """Whose job a read by id must be: with an API key (or a login), the caller's own; anonymous
    clients (known only by address, as in the seed) and staff read any job (ids are unguessable)."""
    if identity.staff or (identity.key_id is None and not identity.name.startswith("user-")):
        return ""
    return identity.name


def limits_of(identity: ClientIdentity) -> jobs.ClientLimits:
    """The client's caps: its key's own, else the settings' (None)."""
    return jobs.ClientLimits(
        max_queued=identity.max_queued, max_running=identity.max_running, redis_bytes=identity.max_redis_bytes
    )


def add_traceback(body: dict[str, Any], state: jobs.JobState, identity: ClientIdentity) -> dict[str, Any]:
    """A failed job's full traceback (`traceback`; `error` is its last line), for staff and for its
    owner known by an API key or a login (whose read was checked against ownership), never for an
    anonymous client: a traceback names the worker's files and a model's internals."""
    if state.status == jobs.FAILED and state.job_id and (identity.staff or reading_owner(identity)):
        body["traceback"] = jobs.failure_traceback(job_id=state.job_id)
    return body
