"""The jobs of `run`: an expected failure is one log line and a failed run; a bug keeps its traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedservice import aio, scheduler
from feedservice.bootstrap import App, make_app
from feedservice.config import load_settings
from tests.conftest import free_port, write_config


@pytest.fixture
def app_with_nothing_reachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """Two sources and the KMA provider, all on a port where nothing listens."""
    dead = free_port()
    cfg = write_config(
        tmp_path,
        sources=[(f"http://127.0.0.1:{dead}/a.xml", "bigtech"), (f"http://127.0.0.1:{dead}/b.xml", "space-sociology")],
        weather_provider="kma",
        weather_extra=f'base_url = "http://127.0.0.1:{dead}/"\ntimeout = 2',
        collect_extra="timeout = 5.0\nparse_processes = 1",
    )
    app = make_app(load_settings(cfg))
    monkeypatch.setattr(scheduler, "_APP", app)
    yield app
    app.close()


def _one_line_each(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the handler would print, record by record; each must be a single line."""
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    printed = [formatter.format(r) for r in caplog.records]
    assert all("\n" not in p for p in printed), "\n".join(printed)
    return printed


def test_no_weather_provider_answering_is_one_line_and_a_failed_run(
    app_with_nothing_reachable: App, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        aio.run(scheduler.weather_job())
    printed = _one_line_each(caplog)
    failed = [p for p in printed if "job weather failed" in p]
    assert len(failed) == 1 and "no provider answered" in failed[0], printed
    assert app_with_nothing_reachable.store.last_job_runs()["weather"].status == "failed"


def test_every_source_unreachable_is_one_line_and_a_failed_run(
    app_with_nothing_reachable: App, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        aio.run(scheduler.collect_job())
    printed = _one_line_each(caplog)
    assert len([p for p in printed if "source failed" in p]) == 2  # each source says why, once
    failed = [p for p in printed if "job collect failed" in p]
    assert len(failed) == 1 and "no source could be fetched" in failed[0] and "2 failed" in failed[0], printed
    runs = app_with_nothing_reachable.store.last_job_runs()
    assert runs["collect"].status == "failed" and "no source could be fetched" in (runs["collect"].detail or "")


def test_a_bug_in_a_job_keeps_its_traceback(app_with_nothing_reachable: App, caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> object:
        raise ZeroDivisionError("a bug")

    aio.run(scheduler._run("collect", broken))
    (record,) = [r for r in caplog.records if "job collect failed" in r.getMessage()]
    assert record.exc_info is not None  # a bug is shown whole, for whoever fixes it
    assert app_with_nothing_reachable.store.last_job_runs()["collect"].status == "failed"
