"""When a source is due (issue 14 item 12): with a controlled clock whose job starts jitter by a
few milliseconds, as apscheduler's do, a source is fetched at every run of its interval."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from feedservice.bootstrap import make_app
from feedservice.config import load_settings
from feedservice.model import SourceState
from feedservice.services.collect import is_due
from tests.conftest import FeedServer, Served, write_config
from tests.test_collect import GOOD, NOW


@pytest.mark.parametrize(
    ("next_attempt", "slack", "due"),
    [
        (None, timedelta(0), True),
        (NOW, timedelta(0), True),
        (NOW + timedelta(milliseconds=4), timedelta(0), False),  # what skipped a whole interval
        (NOW + timedelta(milliseconds=4), timedelta(seconds=6), True),
        (NOW + timedelta(seconds=7), timedelta(seconds=6), False),
    ],
)
def test_is_due(next_attempt: datetime | None, slack: timedelta, due: bool) -> None:
    source = SourceState("https://x.kr/rss", "s", next_attempt=next_attempt)
    assert is_due(source, NOW, slack) is due
    assert not is_due(SourceState("https://x.kr/rss", "s", enabled=False), NOW, slack)


def test_sources_are_fetched_at_every_run_of_their_interval(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.files["/every.xml"] = Served(GOOD)
    feed_server.files["/slow.xml"] = Served(GOOD.replace(b"idxno=", b"slow="))
    every, slow = feed_server.url("/every.xml"), feed_server.url("/slow.xml")
    cfg = write_config(tmp_path, sources=[(every, "bigtech"), (slow, "bigtech")], collect_extra="interval_minutes = 1")
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace(f'url = "{slow}"\n', f'url = "{slow}"\ninterval_minutes = 3\n'), encoding="utf-8")
    clock = [NOW]
    app = make_app(load_settings(cfg), clock=lambda: clock[0])
    # Runs every 60 s; each job reads the clock a few ms after its scheduled time, sometimes
    # sooner than the run before (5 ms, then 1 ms…), as a loaded event loop does.
    jitter = [0.005, 0.001, 0.005, 0.001, 0.005, 0.001, 0.005]
    fetched: dict[str, list[int]] = {"/every.xml": [], "/slow.xml": []}
    try:
        for run, ms in enumerate(jitter):
            clock[0] = NOW + timedelta(minutes=run, seconds=ms)
            feed_server.requests.clear()
            asyncio.run(app.collect())
            for path, _ in feed_server.requests:
                fetched[path].append(run * 60)
    finally:
        app.close()
    assert fetched == {"/every.xml": [0, 60, 120, 180, 240, 300, 360], "/slow.xml": [0, 180, 360]}
