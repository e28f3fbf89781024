"""What the `[web] hosts` check (`web/requestchecks.py` `AllowedHosts`) adds to each request.

    .venv/bin/python bench/hostcheck.py [--calls 200000] [--reps 7]

Calls an ASGI app that does nothing, bare and behind ``AllowedHosts``, with a feed reader's
request head (an allowed ``Host`` with a port, five more headers), alternating, and prints the
median microseconds per call of each and their difference: the cost the check adds to every
request, the feed path's 304s included (compare with their rate in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from feedservice.web.requestchecks import AllowedHosts

SCOPE: Scope = {
    "type": "http",
    "http_version": "1.1",
    "method": "GET",
    "path": "/feeds/bigtech.xml",
    "headers": [
        (b"host", b"127.0.0.1:8080"),
        (b"user-agent", b"Feedly/1.0"),
        (b"accept", b"*/*"),
        (b"accept-encoding", b"gzip"),
        (b"if-none-match", b'"abc123"'),
        (b"connection", b"keep-alive"),
    ],
}


async def nothing(scope: Scope, receive: Receive, send: Send) -> None:
    return None


async def receive() -> Message:
    return {"type": "http.request", "body": b""}


async def send(message: Message) -> None:
    return None


async def per_call(app: ASGIApp, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await app(SCOPE, receive, send)
    return (time.perf_counter() - start) / calls * 1e6


async def main(calls: int, reps: int) -> None:
    checked = AllowedHosts(nothing, frozenset({"127.0.0.1", "localhost", "[::1]"}))
    bare: list[float] = []
    behind: list[float] = []
    for _ in range(reps):
        bare.append(await per_call(nothing, calls))
        behind.append(await per_call(checked, calls))
    b, c = statistics.median(bare), statistics.median(behind)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"bare {b:.3f} µs, behind AllowedHosts {c:.3f} µs: the check adds {c - b:.3f} µs a request "
        f"(medians of {reps} alternating runs of {calls:,} calls; load {load})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.reps))
