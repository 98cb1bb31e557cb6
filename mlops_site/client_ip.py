"""Who the client is: the one reading of a request's address that throttles, login limits and audits use."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Any

from django.conf import settings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    # Settings validate TRUSTED_PROXIES at start-up, so an entry that does not parse here is skipped.
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    return tuple(networks)


def trusted_networks() -> tuple[IPNetwork, ...]:
    """The proxies whose X-Forwarded-For entries we believe (setting TRUSTED_PROXIES; empty: none)."""
    return _networks(tuple(getattr(settings, "TRUSTED_PROXIES", ())))


def _parse(raw: str) -> IPAddress | None:
    """An address as a proxy may write it ("1.2.3.4", "1.2.3.4:5678", "[::1]:80", "::1"), or None."""
    text = raw.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket must count as the same client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def client_address(request: Any) -> str:
    """The client's address: REMOTE_ADDR, or, when that is a trusted proxy, the nearest untrusted hop.

    X-Forwarded-For is walked from the right, because each proxy appends the address it saw: entries left
    of the first untrusted one were written by the client and prove nothing. A malformed entry stops the
    walk at the last address we could trust. Returns "" when the server gave no usable REMOTE_ADDR.
    """
    meta = request.META
    remote = _parse(str(meta.get("REMOTE_ADDR") or ""))
    if remote is None:
        return ""
    networks = trusted_networks()
    if not networks or not _is_trusted(remote, networks):
        return str(remote)
    client = remote
    forwarded = str(meta.get("HTTP_X_FORWARDED_FOR") or "")
    for entry in reversed(forwarded.split(",")):
        hop = _parse(entry)
        if hop is None:
            break
        client = hop
        if not _is_trusted(hop, networks):
            break
    return str(client)
