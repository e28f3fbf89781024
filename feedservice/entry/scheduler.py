"""`feedservice run`: the web app and an apscheduler AsyncIOScheduler in one event loop.

Jobs: collect (+ feed rebuild when anything changed) every collect.interval_minutes,
weather refresh every weather.refresh_minutes, and the digest daily at digest.send_at
in the site timezone. A failing job logs one line and the service keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from feedservice.entry.bootstrap import App
from feedservice.entry.web import create_app

log = logging.getLogger(__name__)

DIGEST_GRACE = timedelta(hours=3)


def _guarded(name: str, job: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        try:
            await job()
        except Exception as exc:
            log.error("job %s failed: %s: %s", name, exc.__class__.__name__, exc, exc_info=True, extra={"job": name})

    return run


def build_scheduler(app: App) -> AsyncIOScheduler:
    s = app.settings
    tz = s.site.tz
    scheduler = AsyncIOScheduler(timezone=tz)
    now = app.clock()
    scheduler.add_job(
        _guarded("collect", app.cycle),
        IntervalTrigger(minutes=s.collect.interval_minutes),
        id="collect",
        next_run_time=now,
        coalesce=True,
        max_instances=1,
    )
    if s.weather.provider != "none":
        scheduler.add_job(
            _guarded("weather", app.refresh_weather),
            IntervalTrigger(minutes=s.weather.refresh_minutes),
            id="weather",
            next_run_time=now,
            coalesce=True,
            max_instances=1,
        )
    send = s.digest.send_time

    async def digest_job() -> None:
        await app.send_digest(app.today())

    scheduler.add_job(
        _guarded("digest", digest_job),
        CronTrigger(hour=send.hour, minute=send.minute, timezone=tz),
        id="digest",
        coalesce=True,
        max_instances=1,
        misfire_grace_time=int(DIGEST_GRACE.total_seconds()),
    )
    return scheduler


class _Server(uvicorn.Server):
    """uvicorn, but a SIGTERM/SIGINT ends in a clean exit (status 0) instead of being re-raised."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
        if self._captured_signals:
            log.info("stopped by %s", signal.Signals(self._captured_signals[-1]).name)


async def serve(app: App, *, with_scheduler: bool) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn handles both), with the scheduler when asked."""
    web = app.settings.web
    config = uvicorn.Config(
        create_app(app), host=web.host, port=web.port, log_config=None, access_log=False, lifespan="off"
    )
    server = _Server(config)
    scheduler = build_scheduler(app) if with_scheduler else None
    if scheduler is not None:
        scheduler.start()
        log.info(
            "scheduler started: collect every %d min, digest at %s %s",
            app.settings.collect.interval_minutes,
            app.settings.digest.send_at,
            app.settings.site.timezone,
        )
    log.info("serving on http://%s:%d/", web.host, web.port)
    try:
        await server.serve()
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=False)


def serve_workers(app: App, *, with_scheduler: bool) -> None:
    """Serve from ``web.workers`` processes (uvicorn's supervisor), for sites one process cannot carry.

    Each worker builds its own app from the config file; the scheduler, when asked, runs in
    this supervising process, on an event loop of its own in a thread.
    """
    web = app.settings.web
    os.environ["FEEDSERVICE_CONFIG"] = str(Path(app.settings.source_path).resolve())
    stop = threading.Event()
    thread = None
    if with_scheduler:

        async def schedule() -> None:
            scheduler = build_scheduler(app)
            scheduler.start()
            try:
                while not stop.is_set():
                    await asyncio.sleep(0.5)
            finally:
                scheduler.shutdown(wait=False)

        thread = threading.Thread(target=asyncio.run, args=(schedule(),), name="scheduler", daemon=True)
        thread.start()
    log.info("serving on http://%s:%d/ with %d worker processes", web.host, web.port, web.workers)
    try:
        uvicorn.run(
            "feedservice.entry.web:app_from_environment", factory=True, host=web.host, port=web.port,
            workers=web.workers, log_config=None, access_log=False, lifespan="off",
        )  # fmt: skip
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=30)
