"""What every request must be before the app sees it: the outermost ASGI middleware of the
server (``web/server.py``), in front of ``RequestLimits``.

Granian (hyper) parses the request and refuses what HTTP/1.1 cannot frame (two different
``Content-Length`` values, an unknown ``Transfer-Encoding``, obs-fold, control bytes), but it passes
on requests that RFC 9112 tells a server to refuse, and the app would have built URLs from them:

- exactly one ``Host``, well formed (RFC 9112 section 3.2: a 400 for an HTTP/1.1 request without
  it, with two, or with one that is not a host and port). Starlette builds ``request.url`` from
  it, so ``Host: evil.example`` came back in a redirect's ``Location`` (web cache poisoning, an
  open redirect through any cache in front; ``web/app.py`` no longer redirects that way either);
- a path in origin form (``/...``): ``CONNECT evil.example:443`` and ``OPTIONS *`` reached the
  router, which redirected the client to ``http://evil.example:443/``. Nothing here is a proxy
  or answers for the whole server, so both are a 400.

``AllowedHosts`` (``web/app.py`` puts it in front of everything the app routes) then answers only
the host names of ``[web] hosts``. A DNS-rebinding page (``attacker.example`` made to resolve to our
address) is same-origin with whatever it loads from us under that name: it could read a form's
CSRF token and post sign-ups from its visitors' browsers and addresses. Its requests say
``Host: attacker.example``, so they get a 421 Misdirected Request (RFC 9110 section 15.5.20: this
server is not authoritative for that host; unlike a 400, it says the request may be right, only
sent to the wrong server, which is what a stale DNS entry or a proxy passing its own Host does),
and the forms' ``Origin`` check (``origin_allowed``) compares with the same names, never with what
the request says about itself. A ``Host`` that is an IP address as written (``10.0.0.5:8080``) is
answered too: health checks and scrapers connect by address, and rebinding needs a name.

Granian's own answers to requests it cannot parse (a 400 or 431 with an empty body and no
``Content-Type``) never reach the app, so they lack the headers of ``pageheaders.ALWAYS``;
they have nothing to sniff or leak.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Set
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from feedservice.config_values import web_host
from feedservice.web.httplimits import plain_answer

__all__ = ["AllowedHosts", "RequestChecks", "origin_allowed"]

log = logging.getLogger(__name__)

# RFC 3986 host (an IP literal, or a reg-name / IPv4 address) and an optional port. Not empty:
# a path's URI always has an authority (and Granian reports a missing Host as an empty one).
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]+)(:[0-9]{0,5})?")
BAD_REQUEST = plain_answer(400, b"bad request\n")
MISDIRECTED = plain_answer(421, b"misdirected request: this server does not answer for that host name\n")


class RequestChecks:
    """ASGI: a 400 for a request without exactly one well-formed ``Host`` or with a target that
    is not a path (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _acceptable(scope):
            await self.app(scope, receive, send)
            return
        for message in BAD_REQUEST:
            await send(message)


def _acceptable(scope: Scope) -> bool:
    """One well-formed Host (HTTP/1.0 may have none) and a path for a target."""
    if not str(scope.get("path", "")).startswith("/"):
        return False
    hosts = [value for name, value in scope["headers"] if name == b"host"]
    if scope.get("http_version") in ("1", "1.0") and hosts in ([], [b""]):
        return True  # HTTP/1.0 predates Host (Granian says "1" for it)
    return len(hosts) == 1 and _HOST.fullmatch(hosts[0]) is not None


class AllowedHosts:
    """ASGI: a 421 for a request whose ``Host`` names none of ``hosts`` (``Settings.allowed_hosts``,
    on any port), before anything is routed; see the module docstring."""

    SEEN = 256  # Host values remembered as allowed: the feed readers' few cost a set lookup

    def __init__(self, app: ASGIApp, hosts: Set[str]) -> None:
        self.app, self.hosts = app, hosts
        self._seen: set[bytes] = set()  # bounded: a stranger's endless ports add nothing past SEEN

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        hosts = [value for name, value in scope["headers"] if name == b"host"]
        log.info("refusing a request for host %.100r: not one of [web] hosts", b", ".join(hosts).decode("latin-1"))
        for message in MISDIRECTED:
            await send(message)

    def _allowed(self, scope: Scope) -> bool:
        host: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"host":
                if host is not None:
                    return False  # two (RequestChecks refuses them first, under the server)
                host = value
        if not host:  # HTTP/1.0 may have none (no browser sends that)
            return scope.get("http_version") in ("1", "1.0")
        if host in self._seen:
            return True
        name = _host_name(host)
        if not _known(name, self.hosts) and not _ip_literal(name):
            return False
        if len(self._seen) < self.SEEN:
            self._seen.add(host)
        return True


def origin_allowed(origin: str, hosts: Set[str]) -> bool:
    """Whether a form's ``Origin`` (``scheme://host[:port]``) is one of ours: http(s) on one of
    ``hosts``, on any port, as the requests themselves (``AllowedHosts``)."""
    try:
        parts = urlsplit(origin)
        name = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not name or parts.username is not None:
        return False
    if parts.path or parts.query or parts.fragment:  # an origin is scheme, host and port only
        return False
    return _known(f"[{name}]" if ":" in name else name, hosts)


def _host_name(raw: bytes) -> str:
    """The host of a ``Host`` value, without its port (``[::1]:8080`` → ``[::1]``)."""
    text = raw.decode("latin-1")
    if text.startswith("["):
        return text[: text.find("]") + 1]
    return text.partition(":")[0]


def _ip_literal(name: str) -> bool:
    """An address as written (``10.0.0.5``, ``[fd00::5]``): what a health check or a scraper that
    connects by address sends. Rebinding needs a name (the page's origin is the name the attacker
    controls); a page whose origin is an address was served from that address, so answering it
    opens nothing. Forms still want one of ``[web] hosts`` as their ``Origin``."""
    try:
        ipaddress.ip_address(name[1:-1] if name.startswith("[") and name.endswith("]") else name)
    except ValueError:
        return False
    return True


def _known(name: str, hosts: Set[str]) -> bool:
    """``name`` is one of ``hosts``, as written or in ``web_host``'s one spelling."""
    if name in hosts:
        return True
    try:
        return web_host(name) in hosts
    except ValueError:
        return False
