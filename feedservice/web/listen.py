"""The web server's listening sockets, opened by us before uvicorn starts.

uvicorn opens its own sockets inside ``Server.startup`` and, when that fails (a ``web.host`` that
does not resolve or is not this machine's, a ``web.port`` already taken or privileged), logs the
error and calls ``sys.exit(3)``: the operator saw uvicorn's log lines and exit 3 instead of our
one line and exit 1 or 2. Opening the sockets here first turns each of those into one of our
errors, and uvicorn is handed the open sockets (``Server.serve(sockets=...)``, its public API).

The sockets match what asyncio's ``create_server`` (uvicorn's default path) would open: one per
address the host resolves to, ``SO_REUSEADDR``, IPv6 sockets IPv6-only.
"""

from __future__ import annotations

import errno
import socket

from feedservice.errors import ConfigError, FeedServiceError

__all__ = ["open_listeners"]

# Bind errors that say the config names an address this machine cannot listen on (exit 2);
# anything else (the port is taken, or needs privileges) is a failure at run time (exit 1).
_NOT_OURS = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}


def open_listeners(host: str, port: int, *, config_path: str, backlog: int = 2048) -> list[socket.socket]:
    """Listening sockets for ``host``:``port``, or ConfigError / FeedServiceError naming the key."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise ConfigError(config_path, "web.host", f"cannot resolve {host!r}: {reason}") from exc
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.set_inheritable(True)  # uvicorn's worker processes inherit it
    except OSError as exc:
        for sock in sockets:
            sock.close()
        where = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        if exc.errno in _NOT_OURS:
            raise ConfigError(config_path, "web.host", where) from exc
        raise FeedServiceError(f"web.port: {where}") from exc
    return sockets
