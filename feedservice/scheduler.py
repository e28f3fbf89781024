"""`feedservice run`: the web app, the scheduler (in the one process holding the scheduling lock)
and a sending helper, in one event loop.

Jobs: collect (+ feed rebuild when anything changed) every collect.interval_minutes, weather
every weather.refresh_minutes, bounce mail every bounces.check_minutes (with an intake), the
digest daily at digest.send_at (site timezone), and delivery retries every 5 minutes. They
persist in the database (apscheduler's SQLAlchemy job store): after a restart a missed digest
runs once within its grace time, or is recorded as skipped. A failing job is recorded and
logged, and the service keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from feedservice import aio
from feedservice.adapters.leader import LeaderLock
from feedservice.bootstrap import App
from feedservice.errors import FeedServiceError, WeatherError
from feedservice.web.app import create_app
from feedservice.web.listen import listen_address
from feedservice.web.server import CutOff, embedded, serve_processes

log = logging.getLogger(__name__)
# After the cut-off at run.shutdown_timeout, how long the requests it ended may take to answer
# before the server is cancelled whatever it is doing.
CUT_GRACE = 1.0

# The jobs are stored in the database (apscheduler's SQLAlchemy job store) as references to these
# module-level functions; they run against the app of this process.
_APP: App | None = None


def _app() -> App:
    assert _APP is not None, "the scheduler runs without an app"
    return _APP


async def _run(name: str, job: Callable[[], Awaitable[object]]) -> None:
    """Run a job, recording it (running → ok | failed) for `status`, `/readyz` and `/metrics`.

    An expected failure (a ``FeedServiceError``: no weather provider answers, every source is
    down) is one log line; only an unexpected exception, a bug, is logged with its traceback.
    """
    app = _app()
    run_id = await asyncio.to_thread(app.store.job_started, name, app.clock())
    status, detail = "ok", None
    try:
        result = await job()
        detail = getattr(result, "summary", lambda: None)() if result is not None else None
    except FeedServiceError as exc:
        status, detail = "failed", str(exc)
        log.error("job %s failed: %s", name, detail, extra={"job": name})
    except Exception as exc:  # a job failure must never stop the service
        status, detail = "failed", f"{exc.__class__.__name__}: {exc}"
        log.error("job %s failed: %s", name, detail, exc_info=True, extra={"job": name})
    finally:
        await asyncio.to_thread(app.store.job_finished, run_id, status, app.clock(), detail)


async def collect_job() -> None:
    async def cycle() -> object:
        report = await _app().cycle()
        if report.failed and not (report.fetched or report.not_modified):  # each source logged its own line
            raise FeedServiceError(f"no source could be fetched: {report.summary()}")
        return report

    await _run("collect", cycle)


async def weather_job() -> None:
    async def refresh() -> object:
        report = await _app().refresh_weather()
        if report.provider is None:  # recorded as failed; the digest falls back to what is stored
            raise WeatherError("all", report.summary())
        return report

    await _run("weather", refresh)


async def digest_job() -> None:
    app = _app()
    await _run("digest", lambda: app.send_digest(app.today()))


async def deliveries_job() -> None:
    """Retries: send what is due (deferred and due, or abandoned by a dead worker) of every edition."""

    async def drain_all() -> None:
        app = _app()
        for day in await asyncio.to_thread(app.store.editions_with_work, app.clock()):
            await app.drain(day)

    await _run("deliveries", drain_all)


async def bounces_job() -> None:
    """Read the bounce intakes; a run the breaker held (or an intake that failed) is a failed job."""

    async def check() -> object:
        report = await asyncio.to_thread(_app().check_bounces)
        if report.held or report.errors:
            raise FeedServiceError(report.summary())
        return report

    await _run("bounces", check)


def _on_missed(event: JobExecutionEvent) -> None:
    app = _app()
    detail = f"missed its time ({event.scheduled_run_time:%Y-%m-%d %H:%M %Z}) by more than the grace time"
    log.warning("job %s skipped: %s", event.job_id, detail, extra={"job": event.job_id})
    app.store.job_skipped(event.job_id, app.clock(), detail)


def build_scheduler(app: App) -> AsyncIOScheduler:
    global _APP
    _APP = app
    scheduler = AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=app.store.engine, tablename="apscheduler_jobs")},
        timezone=app.settings.site.tz,
        job_defaults={"coalesce": True, "max_instances": 1},
    )
    scheduler.add_listener(_on_missed, EVENT_JOB_MISSED)
    return scheduler


def install_jobs(scheduler: AsyncIOScheduler, app: App) -> None:
    """Add the configured jobs, or keep the stored ones (with their next run time, so a run missed
    while the service was down is caught up once within its grace, or recorded as skipped)."""
    s = app.settings
    send = s.digest.send_time
    wanted: dict[str, tuple[Callable[[], Awaitable[None]], Any, int, bool]] = {
        "collect": (collect_job, IntervalTrigger(minutes=s.collect.interval_minutes), 3600, True),
        "digest": (
            digest_job,
            CronTrigger(hour=send.hour, minute=send.minute, timezone=s.site.tz),
            int(s.run.digest_grace_hours * 3600) or 1,
            False,
        ),
        "deliveries": (deliveries_job, IntervalTrigger(minutes=5), 3600, False),
    }
    if app.bounce_intakes() and s.bounces is not None:
        wanted["bounces"] = (bounces_job, IntervalTrigger(minutes=s.bounces.check_minutes), 3600, True)
    if s.weather.provider != "none":
        wanted["weather"] = (weather_job, IntervalTrigger(minutes=s.weather.refresh_minutes), 3600, True)
    for job in scheduler.get_jobs():
        if job.id not in wanted:
            scheduler.remove_job(job.id)
    for job_id, (func, trigger, grace, now) in wanted.items():
        job = scheduler.get_job(job_id)
        if job is None:
            extra = {"next_run_time": app.clock()} if now else {}
            scheduler.add_job(func, trigger, id=job_id, name=job_id, misfire_grace_time=grace, **extra)
        elif str(job.trigger) != str(trigger) or job.misfire_grace_time != grace:
            scheduler.modify_job(job_id, misfire_grace_time=grace)
            scheduler.reschedule_job(job_id, trigger=trigger)


async def lead(app: App, stop: asyncio.Event) -> None:
    """Take the scheduling lock when it is free and schedule while holding it; keep trying."""
    sqlite = app.store.dialect == "sqlite"
    lock_file = Path(app.settings.database_url.removeprefix("sqlite:///") + ".scheduler.lock") if sqlite else None
    lock = LeaderLock(app.store.engine, lock_file)
    scheduler: AsyncIOScheduler | None = None
    try:
        while not stop.is_set():
            held = await asyncio.to_thread(lock.try_acquire)
            if held and scheduler is None:
                seconds = await asyncio.to_thread(app.start_parsers)
                log.info("parser processes started in %.1f s", seconds)
                scheduler = build_scheduler(app)
                scheduler.start(paused=True)
                install_jobs(scheduler, app)
                scheduler.resume()
                log.info(
                    "this process schedules the jobs (collect every %d min, digest at %s %s)",
                    app.settings.collect.interval_minutes,
                    app.settings.digest.send_at,
                    app.settings.site.timezone,
                )
            elif not held and scheduler is not None:
                log.warning("lost the scheduling lock: another process schedules now")
                scheduler.shutdown(wait=False)
                scheduler = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), app.settings.run.leader_retry_seconds)
    finally:
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        lock.release()


async def help_send(app: App, stop: asyncio.Event) -> None:
    """Every process helps send: drain what is due of any edition, now and then."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), app.settings.run.helper_interval_seconds)
        if stop.is_set():
            return
        try:
            for day in await asyncio.to_thread(app.store.editions_with_work, app.clock()):
                await app.drain(day)
        except Exception as exc:  # keep helping next time
            log.error("sending failed: %s: %s", exc.__class__.__name__, exc)


async def serve(app: App, *, with_scheduler: bool) -> None:
    """Serve until SIGINT/SIGTERM; with the scheduler, also lead when this process holds the
    scheduling lock, and help send. Stopping hands back unsent claims.

    The server (Granian, ``web/server.py``) runs in this event loop; a signal stops it, giving
    requests in flight up to ``run.shutdown_timeout``: then those still waiting for their body
    are cut off (a 503, one log line each, ``httplimits.CutOff``) and Granian's stop ends by
    itself; a handler still busy a second later is cancelled with the server. The process exits 0."""
    web = app.settings.web
    timeout = app.settings.run.shutdown_timeout
    # Tried before anything starts, so a bad host or a taken port is one line and exit 1 or 2.
    address = listen_address(web.host, web.port, config_path=app.settings.source_path)
    cutoff = CutOff()
    server = embedded(create_app(app), address, web.port, cutoff=cutoff)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(lead(app, stop)), asyncio.create_task(help_send(app, stop))] if with_scheduler else []
    loop = asyncio.get_running_loop()
    serving = asyncio.ensure_future(server.serve())
    caught: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if not caught:
            server.stop()  # type: ignore[no-untyped-call]  # granian's embeddable Server.stop is unannotated
            loop.call_later(timeout, cutoff.cut)  # requests still waiting for a body then get a 503
            # The last resort, for a handler that outlives the cut: cancelling Granian's serving
            # task (its shutdown callback may then log an InvalidStateError of its own).
            loop.call_later(timeout + CUT_GRACE, serving.cancel)
        caught.append(sig)

    handled = _handle_signals(loop, on_signal)
    log.info("serving on http://%s:%d/", web.host, web.port)
    try:
        await asyncio.wait({serving})
        if not serving.cancelled():
            serving.result()
        if not caught:  # Granian logged why (e.g. the port was taken after all)
            raise FeedServiceError("the web server stopped unexpectedly")
        log.info("stopped by %s", caught[-1].name)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        serving.cancel()
        # Stop taking new work: a send under way stops after its messages in flight and hands
        # back what it had claimed; then give everything up to shutdown_timeout to finish.
        stop.set()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)


def _handle_signals(loop: asyncio.AbstractEventLoop, handler: Callable[[signal.Signals], None]) -> list[signal.Signals]:
    """SIGINT and SIGTERM call ``handler`` (only the main thread can have signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return []
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler, sig)
    return [signal.SIGINT, signal.SIGTERM]


def serve_workers(app: App, *, with_scheduler: bool) -> None:
    """Serve from ``web.workers`` processes (Granian's supervisor), for sites one process cannot carry.

    Each worker builds its own app from the config file; the scheduler, when asked, runs in
    this supervising process, on an event loop of its own in a thread.
    """
    web = app.settings.web
    # Granian's supervisor binds by itself and answers a failure with its own log lines: try
    # the address first so that a bad host or a taken port is our one line (web/listen.py).
    address = listen_address(web.host, web.port, config_path=app.settings.source_path)
    os.environ["FEEDSERVICE_CONFIG"] = str(Path(app.settings.source_path).resolve())
    stop = threading.Event()
    thread = None
    if with_scheduler:

        async def schedule() -> None:
            done = asyncio.Event()
            tasks = [asyncio.create_task(lead(app, done)), asyncio.create_task(help_send(app, done))]
            while not stop.is_set():
                await asyncio.sleep(0.5)
            done.set()
            await asyncio.wait(tasks, timeout=app.settings.run.shutdown_timeout)

        thread = threading.Thread(target=aio.run, args=(schedule(),), name="scheduler", daemon=True)
        thread.start()
    log.info("serving on http://%s:%d/ with %d worker processes", web.host, web.port, web.workers)
    try:
        serve_processes(address, web.port, web.workers, app.settings.run.shutdown_timeout)
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=30)
