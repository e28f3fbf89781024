"""One function per CLI command: call the App, print a readable answer, return the exit status."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from feedservice import aio
from feedservice.bootstrap import App
from feedservice.cli.bounce_commands import (  # the cmd_* handlers: main.Command looks them up here
    cmd_bounces_check,  # noqa: F401
    cmd_bounces_list,  # noqa: F401
    print_edition_feedback,
)
from feedservice.cli.preview import NOTICE, write_preview
from feedservice.model import SubscriberStatus
from feedservice.services import deliver
from feedservice.services import subscribers as subs
from feedservice.services.weather import format_observation, national_summary

OK, FAILED, USAGE = 0, 1, 2
# A subscriber CSV row is under 100 bytes: 64 MB is over half a million readers. `import
# /dev/zero` (or a wrong path to a disk image) read until MemoryError before this cap.
MAX_IMPORT_BYTES = 64 * 1024 * 1024
log = logging.getLogger("feedservice")
# On a terminal rich fits its width; piped output gets wide rows instead of wrapped cells.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _local(app: App, when: datetime | None) -> str:
    return when.astimezone(app.settings.site.tz).strftime("%Y-%m-%d %H:%M") if when else "-"


def cmd_collect(app: App, args: argparse.Namespace) -> int:
    report = aio.run(app.collect(force=args.all))
    changed = aio.run(app.publish_feeds()).changed if report.changed else []
    out.print(f"collect: {report.summary()}; {len(changed)} feed files rewritten")
    for url, error in report.errors.items():
        out.print(f"  failed: {url}: {error}")
    return FAILED if report.failed else OK


def cmd_sources(app: App, args: argparse.Namespace) -> int:
    table = Table("source", "section", "status", "last success", "articles", "last error")
    failing = 0
    for s in app.store.list_sources():
        if not s.enabled:
            status = "disabled"
        elif s.failures:
            status, failing = f"failing ×{s.failures}", failing + 1
        elif s.last_success:
            status = "ok"
        else:
            status = "never fetched"
        table.add_row(
            s.name or s.url, s.section, status, _local(app, s.last_success), str(s.articles), (s.last_error or "")[:80]
        )
    out.print(table)
    return OK


def cmd_build_feeds(app: App, args: argparse.Namespace) -> int:
    changed = aio.run(app.publish_feeds()).changed
    out.print(f"build-feeds: {len(changed)} files rewritten in {app.feeds_dir}")
    for p in changed:
        out.print(f"  {p}")
    return OK


def cmd_weather(app: App, args: argparse.Namespace) -> int:
    errors: list[str] = []
    if args.refresh:
        report = aio.run(app.refresh_weather())
        errors = report.errors
        out.print(f"weather: {report.stations} stations from {report.provider or '(no provider answered)'}")
    block = aio.run(app.weather_for_digest())  # a fresh stored observation is reused
    for e in errors:
        out.print(f"  {e}")
    for o in block.observations:
        line = format_observation(o)
        if block.stale_before is not None and o.observed_at < block.stale_before:
            line += f" ({_local(app, o.observed_at)} 관측)"
        out.print(line)
    if summary := national_summary(block):
        out.print(summary)
    if block.notice:
        out.print(block.notice)
    return OK if block.observations and not errors else FAILED


def _next_edition_day(app: App) -> date:
    """Today's edition before the send time, else tomorrow's: the one a preview is for."""
    now = app.clock().astimezone(app.settings.site.tz)
    day = now.date()
    if now.time() >= app.settings.digest.send_time:
        day += timedelta(days=1)
    return day


def cmd_digest_preview(app: App, args: argparse.Namespace) -> int:
    day = args.date or _next_edition_day(app)
    assembled = aio.run(app.assemble_edition(day))
    ed, preview = assembled.edition, assembled.preview
    files = write_preview(app, ed, preview.rendered, Path(args.out))
    out.print(
        f"digest preview {day}: {preview.rendered.article_count} articles in "
        f"{len(preview.rendered.sections)} sections, window "
        f"{_local(app, ed.window_start)} – {_local(app, ed.window_end)}"
    )
    for path in (files.html, files.text, files.eml):
        out.print(f"  {path.resolve()}")
    out.print(f"  ({NOTICE})")
    return OK


class _Progress:
    """A rich progress bar on a terminal; a log line every few seconds otherwise."""

    def __init__(self, app: App, day: date) -> None:
        counts = app.store.delivery_counts(day)
        self.total = sum(counts.values()) - counts.get("sent", 0) - counts.get("failed", 0)
        self.tty = sys.stdout.isatty()
        self._last = 0.0
        self._bar = None
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]digest {task.fields[day]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeRemainingColumn(),
                console=out,
            )
            self._task = self._bar.add_task("send", total=max(self.total, 1), day=str(day), detail="")

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, report: deliver.SendReport) -> None:
        done = report.sent + report.failed + report.deferred
        detail = f"{report.sent} sent · {report.deferred} deferred · {report.failed} failed · {report.rate:.0f}/s"
        if self._bar is not None:
            self._bar.update(self._task, completed=done, detail=detail)
        elif time.monotonic() - self._last >= 5:
            self._last = time.monotonic()
            log.info("sending: %d of %d done: %s", done, self.total, detail)


def run_stoppable(coro: Any) -> Any:
    """Run a coroutine; SIGTERM or SIGINT cancels it (its unsent claims are handed back) and exits 0."""

    async def main() -> Any:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            log.info("stopped: what was not sent is left for the next run")
            raise SystemExit(0) from None

    return aio.run(main())


def _send_result(day: date, report: deliver.SendReport, verb: str) -> int:
    out.print(f"{verb} {day}: {report.summary()}")
    for e in report.errors[:10]:
        out.print(f"  {e}")
    return FAILED if report.failed or report.deferred or report.paused or report.stopped else OK


def cmd_digest_send(app: App, args: argparse.Namespace) -> int:
    day = args.date or app.today()
    if args.queue_only:
        report = aio.run(app.send_digest(day, queue_only=True))
        out.print(f"digest send {day}: {report.queued} deliveries queued for the workers")
        return OK
    progress = _Progress(app, day) if app.store.get_edition(day) else None
    if progress is None:  # a new edition: the bar starts once the deliveries are recorded
        report = run_stoppable(app.send_digest(day))
    else:
        with progress:
            report = run_stoppable(app.send_digest(day, progress=progress))
    return _send_result(day, report, "digest send")


def cmd_worker(app: App, args: argparse.Namespace) -> int:
    """Drain due deliveries of recorded editions; with --once, one pass; otherwise until stopped."""
    status = OK
    while True:
        days = [args.date] if args.date else app.store.editions_with_work(app.clock())
        for day in days:
            with _Progress(app, day) as progress:
                report = run_stoppable(app.drain(day, progress=progress))
            status = max(status, _send_result(day, report, "worker"))
        if args.once:
            return status
        time.sleep(args.interval)


def cmd_digest_status(app: App, args: argparse.Namespace) -> int:
    day = args.date
    if day is None:
        editions = app.store.list_editions(limit=1)
        if not editions:
            out.print("digest status: no edition yet")
            return OK
        day = editions[0].day
    if app.store.get_edition(day) is None:
        out.print(f"digest status {day}: no such edition")
        return FAILED
    counts = app.store.delivery_counts(day)
    out.print(f"digest status {day}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    print_edition_feedback(app, day)
    if (paused := app.store.sending_paused(day)) is not None:
        out.print(f"  sending {paused}")
        out.print(f"  resume with: feedservice digest send --date {day}")
    for p in app.store.paused_domains(app.clock()):
        until = p.until.astimezone(app.settings.site.tz).strftime("%Y-%m-%d %H:%M:%S %Z")
        out.print(f"  {p.lane} paused until {until} (throttle {p.strikes} in a row), its mail deferred: {p.reason}")
    for d in app.store.delivery_errors(day):
        out.print(f"  {d.status.value}: {d.email}: {d.last_reply}")
    return OK


def cmd_doctor(app: App, args: argparse.Namespace) -> int:
    from feedservice.cli.doctor import Doctor

    doctor = Doctor(app)
    checks = doctor.run()
    for check in checks:
        out.print(check.line(), markup=False, highlight=False)
    out.print("DNS records to publish (docs/deliverability.md):", markup=False, highlight=False)
    for record in doctor.records:
        out.print(f"  {record}", markup=False, highlight=False, soft_wrap=True)
    return OK if all(c.ok for c in checks) else FAILED


def _known(app: App) -> list[str]:
    return [s.slug for s in app.settings.sections]


def cmd_subscribers_add(app: App, args: argparse.Namespace) -> int:
    try:
        email = subs.normalize_email(args.email)
        sections = subs.parse_sections(args.sections, _known(app))
    except ValueError as exc:
        print(f"feedservice: {exc}", file=sys.stderr)
        return USAGE
    sub, created = app.store.add_subscriber(email, sections, SubscriberStatus.SUBSCRIBED, datetime.now(UTC))
    out.print(f"{'added' if created else 'updated'} {sub.email} ({', '.join(sub.sections) or 'all sections'})")
    return OK


def cmd_subscribers_list(app: App, args: argparse.Namespace) -> int:
    table = Table("email", "sections", "status", "created", "why suppressed")
    n, why = 0, app.store.last_suppression_reasons()
    for s in app.store.iter_subscribers():
        reason = why.get(s.id, "") if s.status is SubscriberStatus.SUPPRESSED else ""
        table.add_row(s.email, ",".join(s.sections) or "(all)", s.status.value, _local(app, s.created), reason)
        n += 1
    out.print(table)
    out.print(f"{n} subscribers")
    return OK


def cmd_subscribers_remove(app: App, args: argparse.Namespace) -> int:
    try:
        email = subs.normalize_email(args.email)
    except ValueError as exc:
        print(f"feedservice: {exc}", file=sys.stderr)
        return USAGE
    if not app.store.set_subscriber_status(email, SubscriberStatus.UNSUBSCRIBED):
        out.print(f"no subscriber {email}")
        return FAILED
    out.print(f"unsubscribed {email}")
    return OK


def cmd_subscribers_import(app: App, args: argparse.Namespace) -> int:
    name = "standard input" if args.file == "-" else args.file
    if args.file == "-":
        data = sys.stdin.buffer.read(MAX_IMPORT_BYTES + 1)
    else:
        with open(args.file, "rb") as f:
            data = f.read(MAX_IMPORT_BYTES + 1)
    if len(data) > MAX_IMPORT_BYTES:
        limit = MAX_IMPORT_BYTES // 1024 // 1024
        print(f"feedservice: {name}: larger than {limit} MB: not a subscriber CSV (split it)", file=sys.stderr)
        return FAILED
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        print(f"feedservice: {name}: not UTF-8 text (byte {exc.start}): expected a CSV file", file=sys.stderr)
        return FAILED
    today = datetime.now(UTC).astimezone(app.settings.site.tz).date()
    report = subs.import_csv(app.store, text, _known(app), reason=f"imported from {name} on {today}")
    out.print(
        f"import: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
        f"{len(report.errors)} bad rows"
    )
    for line, error in report.errors:
        out.print(f"  line {line}: {error}")
    return FAILED if report.errors else OK


def cmd_subscribers_export(app: App, args: argparse.Namespace) -> int:
    data = subs.export_csv(app.store.iter_subscribers(), app.store.last_suppression_reasons())
    if args.out == "-":
        sys.stdout.write(data)
    else:
        Path(args.out).write_text(data, encoding="utf-8")
    return OK


def _next_runs(app: App) -> dict[str, str]:
    """Next run times from the scheduler's job store (written by whichever process schedules)."""
    import sqlalchemy as sa

    with app.store.engine.connect() as conn:
        if not sa.inspect(conn).has_table("apscheduler_jobs"):
            return {}
        rows = conn.execute(sa.text("SELECT id, next_run_time FROM apscheduler_jobs")).all()
    return {job: _local(app, datetime.fromtimestamp(t, UTC)) if t else "paused" for job, t in rows}


def cmd_status(app: App, args: argparse.Namespace) -> int:
    runs = app.store.last_job_runs()
    nexts = _next_runs(app)
    table = Table("job", "last run", "result", "last success", "next run", "detail")
    for job in ("collect", "feeds", "weather", "digest", "deliveries"):
        run, ok = runs.get(job), runs.get(f"{job}:ok")
        if run is None and job not in nexts:
            continue
        detail = ((run.detail if run else "") or "")[:70]
        last = _local(app, run.started) if run else "-"
        table.add_row(
            job, last, run.status if run else "-", _local(app, ok.started) if ok else "-", nexts.get(job, "-"), detail
        )
    out.print(table)
    sources = app.store.list_sources(with_counts=False)
    failing = [s for s in sources if s.failures or not s.enabled]
    out.print(f"sources: {len(sources)}, failing: {len(failing)}")
    for s in failing:
        out.print(f"  {s.name or s.url}: {'disabled' if not s.enabled else f'failing ×{s.failures}'}: {s.last_error}")
    editions = app.store.list_editions(limit=1)
    if editions:
        counts = app.store.delivery_counts(editions[0].day)
        out.print(f"last edition {editions[0].day}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    else:
        out.print("last edition: none yet")
    ready, why = app.readiness()
    out.print(f"ready: {why}")
    return OK if ready and not any(r.status == "failed" for k, r in runs.items() if ":" not in k) else FAILED


def _serve(app: App, *, with_scheduler: bool) -> int:
    from feedservice.scheduler import serve, serve_workers

    if app.settings.web.workers > 1:
        serve_workers(app, with_scheduler=with_scheduler)
    else:
        aio.run(serve(app, with_scheduler=with_scheduler))
    return OK


def cmd_serve(app: App, args: argparse.Namespace) -> int:
    return _serve(app, with_scheduler=False)


def cmd_run(app: App, args: argparse.Namespace) -> int:
    return _serve(app, with_scheduler=True)
