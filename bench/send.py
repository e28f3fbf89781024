"""Delivery benchmark: one edition to N subscribers into Postfix's smtp-sink, against the naive way.

    .venv/bin/python bench/send.py [--n 10000 100000] [--pool 16] [--naive 2000] [--slow 500] [--reps 1] [--write]
    .venv/bin/python bench/send.py --n 10000 --profile send.pstats

The whole path is timed: recording the deliveries, rendering once per section choice,
personalising, sending over a pool of SMTP connections and recording each outcome. Postfix's
``smtp-sink`` (Debian's postfix package, installed for that tool only; postfix itself is not
started) accepts everything on 127.0.0.1. The naive way, per subscriber: render the template,
build an ``EmailMessage`` and send it with stdlib smtplib over one connection. The slow-relay
run holds every DATA reply for 1 s (``smtp-sink -w 1``) and sends with a pool of 50.
Each N is sent three times in a row (``--reps K``: K such rounds, each with its naive run, and
the medians of the rounds, ratios taken within each round), unsigned, then DKIM-signed (a throw-away 2048-bit RSA key,
``[digest] dkim_selector``) on the event loop and in the signing process (``[delivery]
dkim_signer``), so the signed/unsigned ratios compare runs on the same machine load.
Each measurement runs in its own process; peak memory is that process tree's. "CPU per message"
is the sending process's CPU time (all its threads, user and system; not the relay's) over the
messages sent: on a shared machine it moves much less with the load than the rate does. The
signing process's CPU time (as it reports it when it stops: start-up included) is a column of its
own, so the work it takes over shows as moved, not gone; the relay's (``smtp-sink``, on the same
cores) is printed with each row, to see how much of the machine is left.
``--profile FILE``: one run of the first N under cProfile (unsigned; ``--signed --signer process``
or ``loop``: signed that way) (the event loop's thread only;
the store's calls run in worker threads), its statistics saved to FILE and the top printed.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, TreeMemory, free_port, run_child, write_section

from feedservice import aio
from feedservice.model import Article

SECTIONS = ["bigtech", "space-sociology", "economy", "society"]
CHOICES = [
    [],
    ["bigtech"],
    ["space-sociology"],
    ["economy"],
    ["society"],
    ["bigtech", "economy"],
    ["space-sociology", "society"],
    ["bigtech", "space-sociology", "economy"],
]
DAY = datetime(2026, 11, 28).date()


def ensure_smtp_sink() -> str:
    if Path("/usr/sbin/smtp-sink").exists():
        return "/usr/sbin/smtp-sink"
    print("installing Debian's postfix for its smtp-sink (postfix is not started) …", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        "echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections",
        shell=True,
        check=True,
    )
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"], check=True, env=env)
    subprocess.run(["service", "postfix", "stop"], check=False, capture_output=True)
    return "/usr/sbin/smtp-sink"


class Sink:
    def __init__(self, wait: float = 0) -> None:
        self.port = free_port()
        args = [
            ensure_smtp_sink(),
            "-u",
            "nobody",
            *(["-w", str(int(wait))] if wait else []),
            f"127.0.0.1:{self.port}",
            "1000",
        ]
        self.proc = subprocess.Popen(args)
        time.sleep(0.5)

    def cpu(self) -> float:
        """The relay's CPU seconds so far (Linux /proc; 0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def articles(newest: datetime) -> list[Article]:
    """The edition's news, for both ways: 10 articles a section, an hour apart before ``newest``."""
    return [
        Article(
            id=f"urn:{s}:{i}",
            url=f"https://www.newsspace.kr/{s}/{i}",
            section=s,
            title=f"{s} 기사 {i}",
            summary_html="<p>" + "오늘의 주요 소식을 전합니다. " * 8 + "</p>",
            author="김정영",
            published=newest - timedelta(hours=i + 1),
        )
        for s in SECTIONS
        for i in range(10)
    ]


def setup(folder: Path, n: int, port: int, pool: int, signed: bool = False, signer: str = "process") -> Path:
    """A config, 4 sections × 10 articles in the edition's window, n subscribers over 8 choices;
    ``signed``: DKIM with a new 2048-bit RSA key in $FEEDSERVICE_DKIM_KEY."""
    from feedservice.adapters.store.schema import subscribers as subscribers_table
    from feedservice.bootstrap import make_app
    from feedservice.config import load_settings

    cfg = folder / "config.toml"
    if signed:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        os.environ["FEEDSERVICE_DKIM_KEY"] = pem.decode()
    sections = "\n".join(f'[[sections]]\nslug = "{s}"\ntitle = "{s}"\n' for s in SECTIONS)
    cfg.write_text(
        f"""[site]
name = "뉴스스페이스"
url = "https://www.newsspace.kr"
[database]
url = "sqlite:///{folder}/fs.db"
{sections}
[weather]
provider = "none"
[digest]
from = "뉴스스페이스 <newsletter@newsspace.kr>"
{'dkim_selector = "bench"' if signed else ""}
[delivery]
dkim_signer = "{signer}"
[delivery.smtp]
host = "127.0.0.1"
port = {port}
tls = "none"
pool_size = {pool}
messages_per_connection = 1000
[logging]
level = "WARNING"
""",
        encoding="utf-8",
    )
    os.environ.setdefault("FEEDSERVICE_SECRET", "bench")
    app = make_app(load_settings(cfg))
    # Collected a minute ago: an edition covers what was first collected since the previous one,
    # up to the moment it is composed (on the real clock), and articles published within BACKLOG.
    end = datetime.now(UTC) - timedelta(minutes=1)
    arts = articles(end)
    app.store.sync_sources([("https://www.newsspace.kr/rss", "bigtech", None)])
    app.store.record_fetch_success(
        "https://www.newsspace.kr/rss", end, end, etag=None, last_modified=None, articles=arts
    )
    now = datetime.now(UTC)
    with app.store.engine.begin() as conn:
        for start in range(0, n, 5000):
            rows = [
                {
                    "email": f"reader{i:06d}@example.com",
                    "status": "subscribed",
                    "sections": CHOICES[i % 8],
                    "created": now,
                    "email_hash": app.store.address_hash(f"reader{i:06d}@example.com"),
                }
                for i in range(start, min(n, start + 5000))
            ]
            app.store._bulk_insert(conn, subscribers_table, rows)
    app.close()
    return cfg


def child_ours(
    n: int, pool: int, wait: float, signed: bool = False, signer: str = "process", profile: str | None = None
) -> None:
    sink = Sink(wait)
    profiler = cProfile.Profile() if profile else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = setup(Path(tmp), n, sink.port, pool, signed, signer)
            from feedservice.bootstrap import make_app
            from feedservice.config import load_settings

            with TreeMemory() as memory:
                app = make_app(load_settings(cfg))
                assert (app.signer() is not None) == signed, "DKIM signing is not configured as asked"
                started, cpu = time.perf_counter(), time.process_time()
                if profiler is not None:
                    profiler.enable()
                report = aio.run(app.send_digest(DAY))
                if profiler is not None:
                    profiler.disable()
                seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
                relay_cpu = sink.cpu()
                app.close()
            assert report.sent == n and report.failed == 0, report.summary()
    finally:
        sink.stop()
    if profiler is not None and profile:
        profiler.dump_stats(profile)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    result = {"seconds": seconds, "cpu": cpu, "signer_cpu": report.signing_cpu, "relay_cpu": relay_cpu}
    result["sent"] = report.sent
    print(json.dumps({**result, "peak_mb": memory.peak_mb}))


def child_processes(n: int, pool: int, processes: int, signed: bool = False) -> None:
    """The same edition sent from ``processes`` processes, as issue 7's scale-out does it: ``digest
    send --queue-only`` records the deliveries, then ``processes`` × ``feedservice worker --once``
    drain them together, each with its own pool (and, signed, its own signing process). Timed from
    the queueing to the last worker's exit, start-ups included; CPU is every one of those processes'
    (signing processes included), which is why the signing column stays empty."""
    import resource

    sink = Sink()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = setup(Path(tmp), n, sink.port, pool, signed, "process")
            cli = [str(Path(sys.executable).parent / "feedservice"), "--config", str(cfg)]
            day = ["--date", DAY.isoformat()]
            with TreeMemory() as memory:
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                started = time.perf_counter()
                subprocess.run([*cli, "digest", "send", *day, "--queue-only"], check=True, capture_output=True)
                workers = [
                    subprocess.Popen(
                        [*cli, "worker", "--once", *day], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                    )
                    for _ in range(processes)
                ]
                for process in workers:
                    _, err = process.communicate()
                    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
                seconds = time.perf_counter() - started
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                relay_cpu = sink.cpu()
            from feedservice.bootstrap import make_app
            from feedservice.config import load_settings

            app = make_app(load_settings(cfg))
            counts = app.store.delivery_counts(DAY)
            app.close()
            assert counts.get("sent") == n, counts
    finally:
        sink.stop()
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result = {"seconds": seconds, "cpu": cpu, "signer_cpu": 0.0, "relay_cpu": relay_cpu, "sent": n}
    print(json.dumps({**result, "peak_mb": memory.peak_mb}))


def child_naive(n: int) -> None:
    """Per subscriber: render the templates, build an EmailMessage, send it with smtplib (one connection)."""
    from feedservice.model import Section, WeatherBlock
    from feedservice.services import digest
    from feedservice.tokens import make_token

    sink = Sink()
    try:
        from zoneinfo import ZoneInfo

        tz = ZoneInfo("Asia/Seoul")
        site = digest.DigestSite(
            name="뉴스스페이스",
            url="https://www.newsspace.kr",
            public_url="https://f.kr",
            language="ko",
            tz=tz,
            sender="뉴스스페이스 <newsletter@newsspace.kr>",
        )
        ed = digest.edition_for(DAY, datetime.combine(DAY, datetime.strptime("07:00", "%H:%M").time(), tz), None)
        arts = articles(ed.window_end)
        sections = [Section(s, s) for s in SECTIONS]
        renderer = digest.DigestRenderer([ROOT / "templates"])
        smtp = smtplib.SMTP("127.0.0.1", sink.port)
        started = time.perf_counter()
        for i in range(n):
            addr = f"reader{i:06d}@example.com"
            unsub = "https://f.kr/unsubscribe/" + make_token(b"bench", "unsubscribe", i, addr, now=datetime.now(UTC))
            chosen = [s for s in sections if not CHOICES[i % 8] or s.slug in CHOICES[i % 8]]
            rendered = renderer.render(
                site, ed, digest.pick_sections(chosen, arts, 5), WeatherBlock(()), web_url="https://f.kr/d"
            )
            msg = EmailMessage(policy=policy.SMTP)
            msg["From"], msg["To"], msg["Subject"] = site.sender, addr, digest.subject_for(site, DAY)
            msg["List-Unsubscribe"] = f"<{unsub}>"
            html, text = rendered.fill({"unsubscribe": unsub, "preferences": unsub})
            msg.set_content(text)
            msg.add_alternative(html, subtype="html")
            smtp.sendmail("newsletter@newsspace.kr", [addr], msg.as_bytes())
        seconds = time.perf_counter() - started
        smtp.quit()
    finally:
        sink.stop()
    print(json.dumps({"seconds": seconds, "sent": n}))


SIGNERS = ("loop", "process")  # signed rows: [delivery] dkim_signer


def _us(result: dict, key: str = "cpu") -> str:  # type: ignore[type-arg]
    return f"{result[key] / result['sent'] * 1e6:,.0f}"


def _signer_us(result: dict) -> str:  # type: ignore[type-arg]
    return _us(result, "signer_cpu") if result["signer_cpu"] else "–"


def _how(signer: str) -> str:
    return "signed on the event loop" if signer == "loop" else "signed in the signing process"


def _rate(result: dict) -> float:  # type: ignore[type-arg]
    return float(result["sent"] / result["seconds"])


def _spread(values: list[float], fmt: str, unit: str = "") -> str:
    """The median, and the range when there is more than one value."""
    mid = format(statistics.median(values), fmt) + unit
    return mid if len(values) == 1 else f"{mid} ({format(min(values), fmt)}–{format(max(values), fmt)}{unit})"


def _median_us(results: list[dict], key: str = "cpu") -> str:  # type: ignore[type-arg]
    values = [r[key] / r["sent"] * 1e6 for r in results if r.get(key)]
    return f"{statistics.median(values):,.0f}" if values else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--pool", type=int, default=16)
    ap.add_argument("--naive", type=int, default=2000)
    ap.add_argument("--slow", type=int, default=500, help="messages for the slow-relay run (pool of 50)")
    ap.add_argument("--reps", type=int, default=1, help="rounds (each: every N three ways, then naive); medians")
    ap.add_argument(
        "--processes", type=int, default=1, help="also send from this many worker processes (issue 7's scale-out)"
    )
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--wait", type=float, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--signed", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--signer", choices=SIGNERS, default="process", help=argparse.SUPPRESS)
    ap.add_argument("--profile", metavar="FILE", help="profile one unsigned run of the first N with cProfile")
    args = ap.parse_args()
    if args.child == "ours":
        child_ours(args.n[0], args.pool, args.wait, args.signed, args.signer, args.profile)
        return
    if args.profile:
        child_ours(args.n[0], args.pool, 0, args.signed, args.signer, profile=args.profile)
        return
    if args.child == "naive":
        child_naive(args.n[0])
        return
    if args.child == "processes":
        child_processes(args.n[0], args.pool, args.processes, args.signed)
        return
    ensure_smtp_sink()
    me = [sys.executable, __file__]
    kinds: tuple[str, ...] = ("unsigned", *SIGNERS)
    if args.processes > 1:
        kinds += ("workers", "workers-signed")
    # results[(n, kind)]: one per round; ratios are taken within a round (the same machine load).
    results: dict[tuple[int, str], list[dict]] = {}  # type: ignore[type-arg]
    naives: list[float] = []
    for round_ in range(1, args.reps + 1):
        for n in args.n:
            for kind in kinds:
                if kind.startswith("workers"):
                    signed = ["--signed"] if kind == "workers-signed" else []
                    child = [*me, "--child", "processes", "--processes", str(args.processes), *signed]
                    child += ["--n", str(n), "--pool", str(args.pool)]
                else:
                    signed = [] if kind == "unsigned" else ["--signed", "--signer", kind]
                    child = [*me, "--child", "ours", "--n", str(n), "--pool", str(args.pool), *signed]
                r = run_child(child, timeout=3600)
                results.setdefault((n, kind), []).append(r)
                print(
                    f"round {round_}, N={n}, {kind}: {_rate(r):.0f} messages/s, {_us(r)} µs CPU a message, "
                    f"signing process {_signer_us(r)} µs, the relay {_us(r, 'relay_cpu')} µs, "
                    f"peak {r['peak_mb']:.0f} MB",
                    file=sys.stderr,
                )
        naive = run_child([*me, "--child", "naive", "--n", str(args.naive)])
        naives.append(_rate(naive))
        print(f"round {round_}, naive: {naives[-1]:.0f} messages/s", file=sys.stderr)
    slow = run_child([*me, "--child", "ours", "--n", str(args.slow), "--pool", "50", "--wait", "1"])
    slow_rate = args.slow / slow["seconds"]
    print(f"slow relay, pool 50: {slow_rate:.1f} messages/s", file=sys.stderr)

    def vs_naive(n: int, kind: str) -> str:
        return _spread([_rate(r) / naive for r, naive in zip(results[(n, kind)], naives, strict=True)], ".1f", "×")

    def of_unsigned(n: int, kind: str) -> str:
        base = "workers" if kind.startswith("workers") else "unsigned"
        pairs = zip(results[(n, base)], results[(n, kind)], strict=True)
        return _spread([_rate(s) / _rate(u) * 100 for u, s in pairs], ".0f", "%")

    def row(n: int, kind: str) -> str:
        rs = results[(n, kind)]
        what = f"feedservice, N = {n:,}, pool {args.pool}"
        if kind.startswith("workers"):
            what += f", {args.processes} `worker` processes (CPU: all of them)"
        if kind in SIGNERS:
            what += f", DKIM-signed (RSA 2048), {_how(kind)}: {of_unsigned(n, kind)} of unsigned"
        elif kind == "workers-signed":
            what += f", DKIM-signed, each in its signing process: {of_unsigned(n, kind)} of unsigned"
        return (
            f"| {what} | {_spread([_rate(r) for r in rs], ',.0f')} | {vs_naive(n, kind)} | {_median_us(rs)} | "
            f"{_median_us(rs, 'signer_cpu')} | {_median_us(rs, 'relay_cpu')} | {max(r['peak_mb'] for r in rs):.0f} |"
        )

    command = " ".join([".venv/bin/python bench/send.py", *(a for a in sys.argv[1:] if a != "--write")])
    rounds = f"the median of {args.reps} rounds (range in brackets); " if args.reps > 1 else ""
    md = "\n".join(
        [
            "## Sending (issues 7 and 16)",
            "",
            f"`{command}` on {datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores. One edition (4 sections, 8 section "
            "choices) into Postfix's `smtp-sink` on 127.0.0.1, SQLite ledger; the whole path is timed (recording the "
            "deliveries, rendering, personalising, sending, recording each outcome). Each round runs every N "
            "unsigned, signed on the loop and signed in the signing process, then the naive way; ratios are taken "
            f"within a round; {rounds}peak memory is the process tree's, the highest of the rounds. CPU per message: "
            "the sending process's (all threads), the signing process's (start-up included) and the relay's, each "
            f"over N. Load average at the end: {os.getloadavg()[0]:.1f}.",
            "",
            "| run | messages/s | vs naive | CPU per message (µs) | signing process (µs) | relay (µs) | peak MB |",
            "|---|---|---|---|---|---|---|",
            *[row(n, kind) for n in args.n for kind in kinds],
            f"| naive (render + `EmailMessage` + smtplib, one connection), {args.naive:,} messages | "
            f"{_spread(naives, ',.0f')} | 1× | – | – | – | – |",
            f"| feedservice, slow relay (`smtp-sink -w 1`), pool 50, {args.slow} messages | {slow_rate:,.1f} | – | – | "
            f"– | – | {slow['peak_mb']:.0f} |",
        ]
    )
    print(md)
    if args.write:
        write_section("send", md)


if __name__ == "__main__":
    main()
