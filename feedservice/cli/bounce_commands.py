"""`feedservice bounces check|list`: read the bounce intakes once; show what came back."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime, time

from rich.console import Console

from feedservice.bootstrap import App
from feedservice.errors import ConfigError

__all__ = ["cmd_bounces_check", "cmd_bounces_list", "print_edition_feedback"]

OK, FAILED = 0, 1
out = Console(highlight=False, soft_wrap=True)


def _need_intake(app: App) -> None:
    """An intake to read, or webhooks (whose held suppressions ``--force`` releases)."""
    b = app.settings.bounces
    hooks = b is not None and any((b.webhooks.ses, b.webhooks.mailgun, b.webhooks.sendgrid, b.webhooks.postmark))
    if not app.bounce_intakes() and not hooks:
        raise ConfigError(app.settings.source_path, "bounces", "no intake is configured (maildir or [bounces.imap])")


def cmd_bounces_check(app: App, args: argparse.Namespace) -> int:
    _need_intake(app)
    report = app.check_bounces(force=args.force)
    out.print(f"bounces check: {report.summary()}", markup=False)  # errors quote servers' replies
    out.print(f"bounce breaker: {app.bounce_breaker().summary()}", markup=False)
    return FAILED if report.held or report.errors else OK


def cmd_bounces_list(app: App, args: argparse.Namespace) -> int:
    since = datetime.combine(args.since, time(0), app.settings.site.tz).astimezone(UTC) if args.since else None
    records = app.store.list_bounces(since, unmatched=args.unmatched)
    tz = app.settings.site.tz
    for r in records:  # one line each, tab-separated: readable, and greppable
        reader = r.recipient or (f"subscriber {r.subscriber_id}" if r.subscriber_id else "-")
        fields = [
            str(r.id),
            f"{r.received.astimezone(tz):%Y-%m-%d %H:%M}",
            r.kind.value,
            str(r.edition or "-"),
            reader,
            r.status or "-",
            r.action,
            r.subject,
        ]
        out.print("\t".join(fields), markup=False)
    out.print(f"{len(records)} messages" + (" (unmatched only)" if args.unmatched else ""))
    return OK


def print_edition_feedback(app: App, day: date) -> None:
    """`digest status`'s lines on what came back from the edition (bounces, complaints, leavers)."""
    feedback = app.store.edition_feedback(day)
    out.print(f"  came back: {feedback.summary()}", markup=False)
    if (warning := feedback.warning) is not None:
        out.print(f"  warning: {warning}", markup=False)
    if app.settings.bounces is not None and (breaker := app.bounce_breaker()).held:
        out.print(f"  bounce breaker: {breaker.summary()}", markup=False)
