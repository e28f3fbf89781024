"""How `feedservice serve` stops: SIGTERM with clients that never send their bodies, many times.

    .venv/bin/python bench/stops.py [--stops 60] [--slow 3] [--workers 1]

Each stop starts `feedservice serve` (``run.shutdown_timeout = 1``) on a fresh SQLite database,
opens ``--slow`` sign-up requests whose bodies never come, sends SIGTERM, and reads the log. A
clean stop logs one line per request it cut off and nothing else: no traceback, no
``InvalidStateError``. Prints how many stops were not clean, the exit statuses and the median
time from SIGTERM to exit. Not a timed test: Granian's shutdown race (README "Security") shows
in some stops only, so it takes many.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, free_port, median, site_config

SLOW_BODY = (
    b"POST /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 100\r\n\r\nema"
)


def wait_until_serving(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited: {log.read_text(encoding='utf-8', errors='replace')}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise SystemExit("serve did not start") from None
            time.sleep(0.05)


def one_stop(folder: Path, slow: int, workers: int) -> tuple[int, float, list[str]]:
    """(exit status, seconds from SIGTERM to exit, the log lines that are not about a cut request)."""
    folder.mkdir(parents=True)
    port = free_port()
    cfg = folder / "config.toml"
    web = f'workers = {workers}\nsecret_env = "BENCH_SECRET"\n'
    rest = f'[delivery]\nmaildir = "{folder}/mail"\n[run]\nshutdown_timeout = 1\n'
    cfg.write_text(site_config(folder, port, web=web, rest=rest), encoding="utf-8")
    log = folder / "serve.log"
    env = {**os.environ, "BENCH_SECRET": "bench-secret"}
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feedservice", "--config", str(cfg), "serve"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=ROOT,
            env=env,
        )
    wait_until_serving(port, proc, log)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(slow)]
    for sock in socks:
        sock.sendall(SLOW_BODY)
    time.sleep(0.5)  # the handlers wait for the bodies
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    status = proc.wait(30)
    took = time.monotonic() - start
    for sock in socks:
        sock.close()
    expected = ("serving on", "stopped by SIGTERM", "cut off by the server stopping")
    other = [line for line in log.read_text(encoding="utf-8").splitlines() if not any(e in line for e in expected)]
    return status, took, other


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stops", type=int, default=60)
    parser.add_argument("--slow", type=int, default=3, help="requests waiting for their body at each stop")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    unclean, statuses, times = 0, set(), []
    with tempfile.TemporaryDirectory(prefix="fs-stops-") as tmp:
        for n in range(args.stops):
            status, took, other = one_stop(Path(tmp) / str(n), args.slow, args.workers)
            statuses.add(status)
            times.append(took)
            if other:
                unclean += 1
                print(f"stop {n}: " + " | ".join(other[:3])[:300], file=sys.stderr)
    print(
        f"{args.stops} stops, {args.slow} slow requests each, workers={args.workers}: {unclean} logged more than "
        f"one line per cut request; exit statuses {sorted(statuses)}; SIGTERM to exit median {median(times):.2f} s, "
        f"max {max(times):.2f} s"
    )


if __name__ == "__main__":
    main()
