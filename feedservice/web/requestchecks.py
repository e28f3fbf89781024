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

Granian's own answers to requests it cannot parse (a 400 or 431 with an empty body and no
``Content-Type``) never reach the app, so they lack the headers of ``pageheaders.ALWAYS``;
they have nothing to sniff or leak.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from feedservice.web.httplimits import plain_answer

__all__ = ["RequestChecks"]

# RFC 3986 host (an IP literal, or a reg-name / IPv4 address) and an optional port. Not empty:
# a path's URI always has an authority (and Granian reports a missing Host as an empty one).
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]+)(:[0-9]{0,5})?")
BAD_REQUEST = plain_answer(400, b"bad request\n")


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
