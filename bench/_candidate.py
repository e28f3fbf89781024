"""The feedservice web app under another ASGI server, on that server's public settings only, for
bench/serve.py's comparison (issue 15 item 5: which server to use).

    python bench/_candidate.py uvicorn|hypercorn CONFIG PORT

One process, uvloop, no lifespan, no access log. These servers are not feedservice's
dependencies: install them into the venv to compare (`pip install uvicorn httptools hypercorn`).
uvicorn runs with its defaults (httptools); it has no public setting that times out a slow
request head, so this is its rate without the limits of issue 13 item 11. Hypercorn runs with
the settings that would hold them (keep_alive_timeout, read_timeout, h11_max_incomplete_size).
"""

from __future__ import annotations

import sys

import uvloop

from feedservice.bootstrap import make_app
from feedservice.config import load_settings
from feedservice.web.app import create_app
from feedservice.web.httplimits import LIMITS
from feedservice.web.server import guarded


def main() -> None:
    server, cfg, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = create_app(make_app(load_settings(cfg)))
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False)
    elif server == "hypercorn":
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.keep_alive_timeout = LIMITS.head_timeout
        config.read_timeout = int(LIMITS.body_timeout)
        config.h11_max_incomplete_size = LIMITS.max_head_bytes
        config.accesslog = config.errorlog = None
        uvloop.run(serve(guarded(app), config, mode="asgi"))
    else:
        raise SystemExit(f"unknown server {server!r}")


if __name__ == "__main__":
    main()
