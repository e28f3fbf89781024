"""The HTTP server: Granian, through its public API, with the limits of ``web/httplimits.py``.

Why Granian (docs/architecture.md, docs/benchmarks.md, issue 15 item 5): it is the one server
whose documented settings time out a slow request head (``http1_settings.header_read_timeout``),
which also closes silent and idle keep-alive connections, bounds the head's buffer and the
header count; uvicorn has no public setting that times out a head (its keep-alive timer only
starts after a response), and Hypercorn holds the limits but served feeds at a sixth of
uvicorn's rate. Granian does the HTTP work in Rust (hyper) and calls our ASGI app on our event
loop, and served the feed path faster than uvicorn did.

One process: ``embedded`` is Granian's embeddable server (``granian.server.embed.Server``,
documented as experimental), an asyncio task in our event loop beside the scheduler and the
sending helper of ``feedservice run``. It installs no signal handlers: the caller stops it.
Several processes (``[web] workers``): ``serve_processes`` is Granian's own supervisor, each
worker building the app from ``FEEDSERVICE_CONFIG`` (``worker_app``).
"""

from __future__ import annotations

import logging
import multiprocessing
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.log import LogLevels
from granian.server.embed import Server as EmbeddedServer
from starlette.types import ASGIApp

from feedservice.web.app import app_from_environment
from feedservice.web.httplimits import LIMITS, CutOff, Limits, RequestLimits, http1_settings
from feedservice.web.requestchecks import RequestChecks

__all__ = ["CutOff", "EmbeddedServer", "embedded", "guarded", "serve_processes", "worker_app"]

log = logging.getLogger(__name__)

# Connections Granian takes before it stops accepting (its "backpressure", per worker). Idle
# keep-alive connections count, so it is well above what a few silent clients can hold open
# for ``head_timeout``; the listening socket's backlog is the same.
MAX_CONNECTIONS = 2048


def _options(host: str, port: int, limits: Limits) -> dict[str, Any]:
    """What both ways of serving share: HTTP/1.1 only, no lifespan, no WebSockets, the limits,
    and Granian's log lines through our handlers (errors only: its start-up lines repeat ours)."""
    return {
        "address": host,
        "port": port,
        "interface": Interfaces.ASGINL,
        "http": HTTPModes.http1,
        "websockets": False,
        "backlog": MAX_CONNECTIONS,
        "backpressure": MAX_CONNECTIONS,
        "http1_settings": http1_settings(limits),
        "log_level": LogLevels.error,
        "log_dictconfig": {
            "loggers": {
                "_granian": {"handlers": [], "propagate": True},
                "granian.access": {"handlers": [], "propagate": False},
            }
        },
    }


def guarded(app: ASGIApp, limits: Limits = LIMITS, cutoff: CutOff | None = None) -> ASGIApp:
    """``app`` as the server runs it: behind ``RequestChecks`` (one Host, a path, the headers of
    every response) and ``RequestLimits`` (the head's size, the body's deadline, and ``cutoff``
    for the requests still waiting for a body when the server stops)."""
    return RequestChecks(RequestLimits(app, limits, cutoff))


def embedded(
    app: ASGIApp, host: str, port: int, limits: Limits = LIMITS, cutoff: CutOff | None = None
) -> EmbeddedServer:
    """Granian serving ``app`` (``guarded``) in the running event loop: await its ``serve()``;
    its ``stop()`` ends it after the requests in flight, and ``cutoff.cut()`` ends those still
    waiting for their body (``feedservice serve`` calls it at ``run.shutdown_timeout``)."""
    return EmbeddedServer(guarded(app, limits, cutoff), **_options(host, port, limits))


def worker_app() -> ASGIApp:
    """One worker process's app (Granian imports this factory in each worker)."""
    return guarded(app_from_environment())


def serve_processes(host: str, port: int, workers: int, shutdown_timeout: float) -> None:
    """Serve from ``workers`` processes under Granian's supervisor until SIGINT/SIGTERM (it
    handles both). The config file is named by ``FEEDSERVICE_CONFIG``.

    A worker that dies (the OOM killer, a ``kill -9``) is started again: by default Granian's
    supervisor stopped every worker and exited 1 instead. One that dies again within seconds of
    its restart (a crash loop) still stops the server, with Granian's "crash loop" line."""
    from granian.server import Server

    # Workers start as fresh interpreters, not forks of this supervisor: a forked worker inherits
    # the supervisor's SIGTERM handler (which only sets a flag in the supervisor's own memory), so a
    # SIGTERM reaching a worker still building its app was lost and the stop waited
    # workers_kill_timeout (30 s) for it. A fresh interpreter dies of it at once. Granian uses the
    # start method multiprocessing is set to (fork or spawn).
    multiprocessing.set_start_method("spawn", force=True)
    Server(
        "feedservice.web.server:worker_app",
        factory=True,
        workers=workers,
        workers_kill_timeout=max(1, round(shutdown_timeout)),
        respawn_failed_workers=True,
        **_options(host, port, LIMITS),
    ).serve()
