"""The `feedservice` command. Exit status: 0 ok, 1 the job ran but something failed, 2 bad usage or config."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from rich.console import Console

from feedservice import __version__
from feedservice.errors import ConfigError, DeliveryFatal, FeedServiceError, StorageError, TemplateError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date as YYYY-MM-DD: {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="feedservice",
        description="Collect a newsroom's articles, serve per-section RSS/Atom feeds, and send a daily "
        "Korean email digest with the KMA regional weather summary.",
        epilog="Exit status: 0 ok, 1 the job ran but something failed, 2 bad usage or config.",
    )
    p.add_argument("--config", default="config.toml", metavar="PATH", help="config file (default: ./config.toml)")
    p.add_argument("--version", action="version", version=f"feedservice {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("collect", help="fetch every due source once and store new articles")
    c.add_argument("--all", action="store_true", help="fetch every source, due or not")
    sub.add_parser("sources", help="show each source's state: status, last success, articles, last error")
    sub.add_parser("build-feeds", help="write the RSS and Atom files of every section (only those that changed)")
    w = sub.add_parser("weather", help="print the digest's weather block (refreshed when the stored one is stale)")
    w.add_argument("--refresh", action="store_true", help="ask the providers now, even if what is stored is fresh")

    d = sub.add_parser("digest", help="preview, send or inspect the daily digest")
    dsub = d.add_subparsers(dest="digest_command", metavar="ACTION", required=True)
    dp = dsub.add_parser("preview", help="render an edition to index.html, digest.txt and digest.eml")
    dp.add_argument("--date", type=_date, help="edition date, YYYY-MM-DD (default: the next edition)")
    dp.add_argument("--out", default="var/preview", help="output folder (default: var/preview)")
    ds = dsub.add_parser("send", help="send an edition to every confirmed subscriber (resumes, never re-sends)")
    ds.add_argument("--date", type=_date, help="edition date, YYYY-MM-DD (default: today in the site timezone)")
    ds.add_argument("--queue-only", action="store_true", help="record the deliveries; leave sending to workers")
    dst = dsub.add_parser("status", help="delivery counts by status and the last errors of an edition")
    dst.add_argument("--date", type=_date, help="edition date (default: the latest edition)")

    s = sub.add_parser("subscribers", help="manage subscribers")
    ssub = s.add_subparsers(dest="subscribers_command", metavar="ACTION", required=True)
    sa = ssub.add_parser("add", help="add a confirmed subscriber (the web form is the double opt-in path)")
    sa.add_argument("email")
    sa.add_argument("--sections", default="", help="comma-separated section slugs (default: all)")
    ssub.add_parser("list", help="list subscribers")
    sr = ssub.add_parser("remove", help="unsubscribe an address")
    sr.add_argument("email")
    si = ssub.add_parser("import", help="import a CSV (email,sections,status,created); idempotent")
    si.add_argument("file", help="CSV file, or - for standard input")
    se = ssub.add_parser("export", help="export every subscriber as CSV (re-importable)")
    se.add_argument("--out", default="-", help="file to write (default: standard output)")

    wk = sub.add_parser("worker", help="send the due deliveries of recorded editions (several may run at once)")
    wk.add_argument("--date", type=_date, help="only this edition (default: every edition with work to do)")
    wk.add_argument("--once", action="store_true", help="one pass, then exit (default: keep going until stopped)")
    wk.add_argument("--interval", type=float, default=30.0, help="seconds between passes (default: 30)")
    sub.add_parser("status", help="jobs' last and next runs, failing sources, the last edition's deliveries")
    sub.add_parser("serve", help="serve the web app only (feeds, digest pages, unsubscribe)")
    sub.add_parser("run", help="serve the web app and run the scheduler (collect, weather, daily digest)")
    dm = sub.add_parser("demo", help="offline showcase: sample feeds and weather on 127.0.0.1, one full cycle")
    dm.add_argument("--dir", help="where to put the demo's files (default: a new temporary folder)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    err = Console(stderr=True, highlight=False)
    if args.command == "demo":
        from feedservice.entry.demo import run_demo

        return _guard(err, lambda: run_demo(Path(args.dir) if args.dir else None))
    from feedservice.config import load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"feedservice: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from feedservice.entry.logs import setup_logging

    setup_logging(settings.logging.level, json_lines=settings.logging.format == "json")
    return _guard(err, lambda: _dispatch(args, settings))


def _guard(err: Console, fn: Callable[[], int]) -> int:
    try:
        return fn()
    except ConfigError as exc:
        print(f"feedservice: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (TemplateError, StorageError, DeliveryFatal) as exc:
        print(f"feedservice: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except FeedServiceError as exc:
        print(f"feedservice: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: object) -> int:
    from feedservice.entry import commands
    from feedservice.entry.bootstrap import make_app

    app = make_app(settings)  # type: ignore[arg-type]
    try:
        handler = commands.HANDLERS[
            " ".join(
                x
                for x in (
                    args.command,
                    getattr(args, "digest_command", None),
                    getattr(args, "subscribers_command", None),
                )
                if x
            )
        ]
        return handler(app, args)
    finally:
        app.close()
