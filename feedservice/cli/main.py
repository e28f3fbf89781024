"""The `feedservice` command. Exit status: 0 ok, 1 the job ran but something failed, 2 bad usage or config.

One rule for every failure, at the top (``main``): the operator gets one line on stderr and the
exit status, never a traceback; ``--debug`` prints the traceback as well. Usage errors (argparse)
and config errors exit 2, everything else 1.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from feedservice import __version__
from feedservice.errors import ConfigError, FeedServiceError

if TYPE_CHECKING:
    from feedservice.bootstrap import App
    from feedservice.config import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Edition dates: wide enough for any real edition, far enough from date.min/max that the
# edition window (the day before, in any time zone) cannot overflow.
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(9998, 12, 31)
MAX_INTERVAL = 24 * 3600.0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage itself is one ``--help`` away), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _date(value: str) -> date:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date as YYYY-MM-DD: {value!r}") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise argparse.ArgumentTypeError(f"not an edition date between {FIRST_DAY} and {LAST_DAY}: {value!r}")
    return day


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 1 <= seconds <= MAX_INTERVAL:  # also refuses nan
        raise argparse.ArgumentTypeError(f"not a number of seconds from 1 to {MAX_INTERVAL:.0f}: {value!r}")
    return seconds


class Command:
    """A command's handler, ``cmd_<name>`` in cli/commands.py, imported only when it runs.

    Each leaf parser carries one (``set_defaults(func=…)``), so dispatching is ``args.func(app,
    args)``; the lazy import keeps `--help`, usage errors and config errors quick (commands.py
    pulls in the whole service).
    """

    def __init__(self, name: str) -> None:
        self.name = "cmd_" + name.replace("-", "_")

    def __call__(self, app: App, args: argparse.Namespace) -> int:
        from feedservice.cli import commands

        handler: Callable[[App, argparse.Namespace], int] = getattr(commands, self.name)
        return handler(app, args)

    def __repr__(self) -> str:
        return f"Command({self.name!r})"


def _leaf(
    sub: Any, name: str, help: str, *, handler: str | None = None, writes: tuple[str, ...] = ()
) -> argparse.ArgumentParser:
    """A command that runs against the app; ``writes``: the config keys of the folders it writes."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help)
    parser.set_defaults(func=Command(handler or name), writes=writes)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from feedservice.cli.demo import run_demo

    return run_demo(Path(args.dir) if args.dir else None)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="feedservice",
        description="Collect a newsroom's articles, serve per-section RSS/Atom feeds, and send a daily "
        "Korean email digest with the KMA regional weather summary.",
        epilog="Exit status: 0 ok, 1 the job ran but something failed, 2 bad usage or config.",
    )
    p.add_argument("--config", default="config.toml", metavar="PATH", help="config file (default: ./config.toml)")
    p.add_argument("--version", action="version", version=f"feedservice {__version__}")
    p.add_argument("--debug", action="store_true", help="on an error, print the traceback too")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = _leaf(sub, "collect", "fetch every due source once and store new articles", writes=("feeds.output_dir",))
    c.add_argument("--all", action="store_true", help="fetch every source, due or not")
    _leaf(sub, "sources", "show each source's state: status, last success, articles, last error")
    _leaf(
        sub,
        "build-feeds",
        "write the RSS and Atom files of every section (only those that changed)",
        writes=("feeds.output_dir",),
    )
    w = _leaf(sub, "weather", "print the digest's weather block (refreshed when the stored one is stale)")
    w.add_argument("--refresh", action="store_true", help="ask the providers now, even if what is stored is fresh")

    d = sub.add_parser("digest", help="preview, send or inspect the daily digest")
    dsub = d.add_subparsers(dest="digest_command", metavar="ACTION", required=True)
    dp = _leaf(dsub, "preview", "render an edition to index.html, digest.txt and digest.eml", handler="digest_preview")
    dp.add_argument("--date", type=_date, help="edition date, YYYY-MM-DD (default: the next edition)")
    dp.add_argument("--out", default="var/preview", help="output folder (default: var/preview)")
    ds = _leaf(
        dsub,
        "send",
        "send an edition to every confirmed subscriber (resumes, never re-sends)",
        handler="digest_send",
        writes=("delivery.maildir",),
    )
    ds.add_argument("--date", type=_date, help="edition date, YYYY-MM-DD (default: today in the site timezone)")
    ds.add_argument("--queue-only", action="store_true", help="record the deliveries; leave sending to workers")
    dst = _leaf(dsub, "status", "delivery counts by status and the last errors of an edition", handler="digest_status")
    dst.add_argument("--date", type=_date, help="edition date (default: the latest edition)")

    s = sub.add_parser("subscribers", help="manage subscribers")
    ssub = s.add_subparsers(dest="subscribers_command", metavar="ACTION", required=True)
    sa = _leaf(
        ssub, "add", "add a confirmed subscriber (the web form is the double opt-in path)", handler="subscribers_add"
    )
    sa.add_argument("email")
    sa.add_argument("--sections", default="", help="comma-separated section slugs (default: all)")
    _leaf(ssub, "list", "list subscribers (and why each suppressed one is)", handler="subscribers_list")
    sr = _leaf(ssub, "remove", "unsubscribe an address", handler="subscribers_remove")
    sr.add_argument("email")
    si = _leaf(
        ssub,
        "import",
        "import a CSV (email,sections,status,created,email_hash,reason); idempotent; a suppressed row records "
        "its reason, or the file",
        handler="subscribers_import",
    )
    si.add_argument("file", help="CSV file, or - for standard input")
    se = _leaf(ssub, "export", "export every subscriber as CSV (re-importable)", handler="subscribers_export")
    se.add_argument("--out", default="-", help="file to write (default: standard output)")

    b = sub.add_parser("bounces", help="read bounce mail and complaints; list what came back")
    bsub = b.add_subparsers(dest="bounces_command", metavar="ACTION", required=True)
    bc = _leaf(
        bsub,
        "check",
        "read every [bounces] intake once; print hard, soft, complaints, auto-replies, unmatched",
        handler="bounces_check",
    )
    bc.add_argument(
        "--force",
        action="store_true",
        help="apply a run that would suppress a suspicious share of the list, and every suppression "
        "the breaker held (webhook events too); its 24-hour window starts again",
    )
    bl = _leaf(
        bsub,
        "list",
        "list returned mail: kind, the reader and edition it is about, what it did",
        handler="bounces_list",
    )
    bl.add_argument("--since", type=_date, help="from this day on, YYYY-MM-DD (site time zone)")
    bl.add_argument("--unmatched", action="store_true", help="only what matched no delivery (for a person to read)")

    wk = _leaf(
        sub,
        "worker",
        "send the due deliveries of recorded editions (several may run at once)",
        writes=("delivery.maildir",),
    )
    wk.add_argument("--date", type=_date, help="only this edition (default: every edition with work to do)")
    wk.add_argument("--once", action="store_true", help="one pass, then exit (default: keep going until stopped)")
    wk.add_argument("--interval", type=_seconds, default=30.0, help="seconds between passes (default: 30)")
    _leaf(sub, "status", "jobs' last and next runs, failing sources, the last edition's deliveries")
    _leaf(
        sub,
        "doctor",
        "check DKIM, DMARC alignment, one-click unsubscribe and the footer offline; print the DNS records to publish",
    )
    # serve writes the sign-up confirmation mail; run also collects and builds the feeds.
    _leaf(sub, "serve", "serve the web app only (feeds, digest pages, unsubscribe)", writes=("delivery.maildir",))
    _leaf(
        sub,
        "run",
        "serve the web app and run the scheduler (collect, weather, daily digest)",
        writes=("feeds.output_dir", "delivery.maildir"),
    )
    dm = sub.add_parser("demo", help="offline showcase: sample feeds and weather on 127.0.0.1, one full cycle")
    dm.add_argument("--dir", help="where to put the demo's files (default: a new temporary folder)")
    dm.set_defaults(standalone=_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        return _fail(args, f"config error: {exc}", EXIT_USAGE)
    except FeedServiceError as exc:
        return _fail(args, str(exc), EXIT_FAILED)
    except OSError as exc:  # a file or folder named on the command line or in the config
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return _fail(args, f"{where}{exc.strerror or exc}", EXIT_FAILED)
    except Exception as exc:
        return _fail(args, f"unexpected error: {exc.__class__.__name__}: {exc}", EXIT_FAILED, unexpected=True)


def _fail(args: argparse.Namespace, message: str, status: int, *, unexpected: bool = False) -> int:
    """Print one line (any line break in the message folded) and, with --debug, the traceback first."""
    if args.debug:
        traceback.print_exc()
    elif unexpected:
        message += " (run again with --debug to see the traceback)"
    print("feedservice: " + re.sub(r"\s*[\r\n]+\s*", " ", message).strip(), file=sys.stderr)
    return status


def _run(args: argparse.Namespace) -> int:
    if standalone := getattr(args, "standalone", None):  # needs no config (demo)
        result: int = standalone(args)
        return result
    from feedservice.config import load_settings
    from feedservice.logs import setup_logging

    settings = load_settings(args.config)
    setup_logging(settings.logging.level, json_lines=settings.logging.format == "json")
    return _dispatch(args, settings)


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from feedservice.bootstrap import make_app
    from feedservice.cli.preflight import check_folders

    # Every command opens (and may migrate) the database; some also write feeds or mail.
    check_folders(settings, ("database.url", *args.writes))
    app = make_app(settings)
    try:
        result: int = args.func(app, args)
        return result
    finally:
        app.close()
