"""The web server's address, tried by us before the server starts.

The server (Granian, ``web/server.py``) binds its own socket and, when that fails (a ``web.host``
that does not resolve or is not this machine's, a ``web.port`` already taken or privileged), logs
its own lines: the operator would see those instead of our one line and exit 1 or 2. Binding the
address here first turns each of those into one of our errors; ``listen_address`` then closes the
socket and gives the server the numeric address it bound (Granian binds an address, not a name).

The sockets match what asyncio's ``create_server`` would open: one per address the host resolves
to, ``SO_REUSEADDR``, IPv6 sockets IPv6-only. The server listens on the first of them.
"""

from __future__ import annotations

import errno
import socket

from feedservice.errors import ConfigError, FeedServiceError

__all__ = ["listen_address", "open_listeners"]

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
    except OSError as exc:
        for sock in sockets:
            sock.close()
        where = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        if exc.errno in _NOT_OURS:
            raise ConfigError(config_path, "web.host", where) from exc
        raise FeedServiceError(f"web.port: {where}") from exc
    return sockets


def listen_address(host: str, port: int, *, config_path: str) -> str:
    """The numeric address the server is to bind for ``host``, once we could bind it ourselves
    (``open_listeners``' errors otherwise); the trial sockets are closed again."""
    sockets = open_listeners(host, port, config_path=config_path)
    address = str(sockets[0].getsockname()[0])
    for sock in sockets:
        sock.close()
    return address
