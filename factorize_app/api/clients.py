"""Who is asking: a client's address (a trusted proxy's header, else the connection) and its name."""

import ipaddress

from django.conf import settings


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


def client_name(meta) -> str:
    """A client for fair queueing and limits: its verified identity's name (`key-<pk>` for an API
    key, else `address-<ip>`; see factorize_app.api.authentication). Raises InvalidApiKey for a
    bad key (DRF's authentication has refused such requests before any view runs)."""
    from factorize_app.api.authentication import identify  # it imports client_address from here

    return identify(meta).name


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
