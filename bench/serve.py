"""Feed serving benchmark: `feedservice serve` against nginx serving the same file, same run.

    .venv/bin/python bench/serve.py [--duration 10] [--reps 3] [--connections 50] [--workers 1 2]
                                    [--candidates uvicorn hypercorn] [--write]

Builds a 50-entry section feed with feedservice itself (Korean articles like bench/collect.py's),
then measures requests/s with wrk (Debian's package, installed when missing) on 127.0.0.1 for
the 200 path and the 304 path (If-None-Match with the server's own ETag), for `feedservice serve`
(the ASGI path under Granian, with --workers processes), for the same app under the --candidates
servers (bench/_candidate.py: one process each, when installed) and for Debian's nginx serving the
built file from disk, in the same run. Medians of --reps alternating runs. Target (issue 15):
feedservice ≥ 25% of nginx's rate.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Nginx, free_port, median, site_config, write_section
from collect import make_feed

from feedservice import aio

WORK = ROOT / "var" / "bench"


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("installing Debian's wrk (apt-get) …", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
    return shutil.which("wrk") or "/usr/bin/wrk"


def build_site(folder: Path, port: int) -> Path:
    """A config and a database with one 50-entry section, its feeds built; returns the config."""
    from feedservice.adapters.parse import parse_feed
    from feedservice.bootstrap import make_app
    from feedservice.config import load_settings

    cfg = folder / "config.toml"
    source = '[[sources]]\nurl = "https://www.newsspace.kr/rss/S1N1.xml"\nsection = "bigtech"\n'
    text = site_config(folder, port, sources=source, web="workers = 1\n", rest='[logging]\nlevel = "WARNING"\n')
    cfg.write_text(text, encoding="utf-8")
    app = make_app(load_settings(cfg))
    now = datetime.now(UTC)
    parsed = parse_feed(
        make_feed(1, "https://www.newsspace.kr", now),
        url="https://www.newsspace.kr/rss/S1N1.xml",
        section="bigtech",
        tz=app.settings.site.tz,
        now=now,
    )
    app.store.record_fetch_success(
        "https://www.newsspace.kr/rss/S1N1.xml", now, now, etag=None, last_modified=None, articles=parsed.articles
    )
    aio.run(app.publish_feeds())
    app.close()
    return cfg


def wrk(url: str, seconds: int, connections: int, etag: str | None) -> float:
    cmd = [ensure_wrk(), "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if etag:
        cmd[1:1] = ["-H", f"If-None-Match: {etag}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not m or non2xx:
        raise RuntimeError(f"wrk failed or saw errors:\n{out}")
    return float(m.group(1))


def etag_and_status(url: str) -> tuple[str, int, int]:
    with urllib.request.urlopen(url) as resp:
        body = resp.read()
        return resp.headers["ETag"], resp.status, len(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="feedservice web worker processes")
    ap.add_argument(
        "--candidates",
        nargs="*",
        default=[],
        choices=["uvicorn", "hypercorn"],
        help="the same app under these servers too (bench/_candidate.py; install them first)",
    )
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="bench-serve-", dir=WORK))
    folder.chmod(0o755)  # nginx workers run as an unprivileged user
    port = free_port()
    cfg = build_site(folder, port)
    size = 0
    # The reference as Debian ships it: a worker per core and the access log on.
    nginx = Nginx(folder / "feeds", WORK / "nginx-serve", workers="auto", access_log=True)
    template = cfg.read_text(encoding="utf-8")
    results: dict[str, list[float]] = {}
    try:
        theirs = nginx.url("/bigtech.xml")
        their_etag, _, their_size = etag_and_status(theirs)
        contenders = [(f"feedservice-{w}", w, None) for w in args.workers]
        contenders += [(name, 1, name) for name in args.candidates]
        for key, workers, candidate in contenders:
            cfg.write_text(template.replace("workers = 1\n", f"workers = {workers}\n"), encoding="utf-8")
            if candidate is None:
                argv = [sys.executable, "-m", "feedservice", "--config", str(cfg), "serve"]
            else:
                argv = [sys.executable, str(Path(__file__).with_name("_candidate.py")), candidate, str(cfg), str(port)]
            server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                ours = f"http://127.0.0.1:{port}/feeds/bigtech.xml"
                deadline = time.monotonic() + 30
                while True:
                    try:
                        our_etag, _, size = etag_and_status(ours)
                        break
                    except OSError:
                        if time.monotonic() > deadline or server.poll() is not None:
                            raise RuntimeError(f"{key} did not start") from None
                        time.sleep(0.2)
                assert size == their_size, (size, their_size)
                for code in ("200", "304"):
                    results[f"{key}:{code}"] = []
                    results[f"nginx-{key}:{code}"] = []
                for _ in range(args.reps):
                    for code, theirs_tag, ours_tag in (("200", None, None), ("304", their_etag, our_etag)):
                        results[f"nginx-{key}:{code}"].append(wrk(theirs, args.duration, args.connections, theirs_tag))
                        results[f"{key}:{code}"].append(wrk(ours, args.duration, args.connections, ours_tag))
                    print({k: round(v[-1]) for k, v in results.items() if v}, file=sys.stderr)
            finally:
                server.terminate()
                server.wait(30)
    finally:
        nginx.stop()
    med = {k: median(v) for k, v in results.items()}
    names = {f"feedservice-{w}": f"feedservice, {w} process{'es' if w > 1 else ''}" for w in args.workers}
    names |= {"uvicorn": "uvicorn (defaults: no head timeout)", "hypercorn": "Hypercorn (limits held)"}
    keys = [f"feedservice-{w}" for w in args.workers] + list(args.candidates)
    md = "\n".join(
        [
            "## Serving feeds (issues 4 and 15)",
            "",
            f"`.venv/bin/python bench/serve.py {' '.join(a for a in sys.argv[1:] if a != '--write')}` on "
            f"{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores: wrk -t2 -c{args.connections} for {args.duration} s "
            f"against one 50-entry section feed ({size:,} bytes) on 127.0.0.1, served by `feedservice serve` "
            "(Granian with uvloop; feed requests answered by the ASGI app, `web/feedserver.py`, from replies "
            "prepared once per file version, behind the request limits of `web/httplimits.py`; `[web] workers` "
            "processes), by the same app under other servers where listed (`bench/_candidate.py`, one process), "
            "and by Debian's nginx (a worker per core, access log on) from the file the build wrote; "
            "304 = If-None-Match with the server's own ETag. Medians of "
            f"{args.reps} runs, each server's alternating with nginx's (a shared, noisy machine: compare the "
            "ratios, each taken against the nginx runs beside it).",
            "",
            "| path | server | req/s | nginx beside it (req/s) | server / nginx |",
            "|---|---|---|---|---|",
            *[
                f"| {code} | {names[key]} | {med[f'{key}:{code}']:,.0f} | {med[f'nginx-{key}:{code}']:,.0f} | "
                f"{med[f'{key}:{code}'] / med[f'nginx-{key}:{code}']:.0%} |"
                for code in ("200", "304")
                for key in keys
            ],
        ]
    )
    print(md)
    if args.write:
        write_section("serve", md)


if __name__ == "__main__":
    main()
