"""Running it for real: persisted jobs and their grace time across restarts, one scheduling leader
among several processes with takeover, stopping cleanly mid-send, /readyz, /metrics and `status`."""

from __future__ import annotations

import collections
import functools
import mailbox
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from feedservice.bootstrap import make_app
from feedservice.cli.demo import sample_rss
from feedservice.config import load_settings
from feedservice.web.app import create_app
from tests.conftest import FeedServer, Served, free_port, write_config

ITEMS = [("빅테크 기사", "요약", "김정영", datetime.now(UTC) - timedelta(hours=2), 1)]


def _config(tmp_path: Path, feed_server: FeedServer, *, db_url: str | None = None, extra: str = "") -> Path:
    from feedservice.cli.demo import sample_sfctm2

    feed_server.files["/rss.xml"] = Served(sample_rss("https://www.newsspace.kr", "bigtech", "빅테크", ITEMS))
    feed_server.files["/kma"] = Served(sample_sfctm2(datetime.now(UTC)), "text/plain")
    cfg = write_config(
        tmp_path,
        db_url=db_url,
        sources=[(feed_server.url("/rss.xml"), "bigtech")],
        weather_provider="kma",
        weather_extra=f'base_url = "{feed_server.url("/kma")}"',
    )
    port = free_port()
    text = cfg.read_text(encoding="utf-8")
    text = text.replace("[web]\n", f"[web]\nport = {port}\n").replace("[digest]", '[digest]\nwhen_empty = "note"')
    cfg.write_text(text + f"\n[run]\nleader_retry_seconds = 1\nshutdown_timeout = 10\n{extra}", encoding="utf-8")
    return cfg


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feedservice", "--config", str(cfg), *args], capture_output=True, text=True, timeout=120
    )


RUNNING: list[Running] = []


@pytest.fixture(autouse=True)
def _stop_leftovers() -> Iterator[None]:
    yield
    while RUNNING:
        r = RUNNING.pop()
        if r.proc.poll() is None:
            r.proc.kill()
        r.proc.wait(10)
        for pipe in (r.proc.stdout, r.proc.stderr):
            if pipe is not None:
                pipe.close()


class Running:
    """`feedservice run` in a subprocess."""

    def __init__(self, cfg: Path) -> None:
        RUNNING.append(self)
        self.log = ""
        self.cfg = cfg
        self.port = load_settings(cfg).web.port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "feedservice", "--config", str(cfg), "run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with httpx.Client(timeout=1) as http:  # one client: each httpx.get() builds an SSL context
            wait_for(lambda: self._up(http), 90, "the service did not start")

    def _up(self, http: httpx.Client) -> bool:
        assert self.proc.poll() is None, self.proc.communicate()
        try:
            return http.get(f"http://127.0.0.1:{self.port}/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        self.proc.send_signal(sig)
        if self.proc.stderr is not None:
            os.set_blocking(self.proc.stderr.fileno(), True)
        _, err = self.proc.communicate(timeout=30)
        self.log += err or ""
        return self.proc.returncode, self.log


def wait_for(check: Callable[[], bool], seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def _job_ran(cfg: Path, job: str) -> bool:
    return (job, "ok") in _job_runs(cfg)


@functools.lru_cache
def _database_url(cfg: Path, mtime_ns: int) -> str:
    return load_settings(cfg).database_url


def _job_runs(cfg: Path) -> list[tuple[str, str]]:
    """The recorded job runs, read straight from the database. Polled every 0.1 s while a service
    runs, so not through ``make_app``: that would migrate-check and write the configured sections
    and sources at each poll, costing the service beside it CPU and SQLite's write lock."""
    import sqlalchemy as sa

    from feedservice.adapters.store import schema as t
    from feedservice.adapters.store._base import make_engine

    engine = make_engine(_database_url(cfg, cfg.stat().st_mtime_ns))
    try:
        with engine.connect() as conn:
            return [(r.job, r.status) for r in conn.execute(sa.select(t.job_runs).order_by(t.job_runs.c.id))]
    except sa.exc.DBAPIError:  # the service has not created its tables yet
        return []
    finally:
        engine.dispose()


def _move_job(cfg: Path, job_id: str, when: datetime) -> None:
    """Set a stored job's next run time, as a downtime would leave it (through the job store itself)."""
    app = make_app(load_settings(cfg))
    try:
        store = SQLAlchemyJobStore(engine=app.store.engine, tablename="apscheduler_jobs")
        store.start(BackgroundScheduler(timezone=UTC), "default")
        job = store.lookup_job(job_id)
        assert job is not None, f"no stored job {job_id}"
        job._modify(next_run_time=when)
        store.update_job(job)
    finally:
        app.close()


def _leads(r: Running) -> bool:
    """Whether a running process holds the scheduling lock (its log says so first)."""
    import selectors

    assert r.proc.stderr is not None
    os.set_blocking(r.proc.stderr.fileno(), False)
    sel = selectors.DefaultSelector()
    sel.register(r.proc.stderr, selectors.EVENT_READ)
    if sel.select(timeout=0.1):
        chunk = r.proc.stderr.read() or ""
        r.log += chunk
    sel.close()
    return "this process schedules the jobs" in r.log


def _mails(folder: Path) -> int:
    return len(list(mailbox.Maildir(str(folder), create=False))) if (folder / "new").exists() else 0


def test_jobs_fire_persist_and_respect_the_digest_grace(tmp_path: Path, feed_server: FeedServer) -> None:
    cfg = _config(tmp_path, feed_server)
    assert _cli(cfg, "subscribers", "add", "reader@example.com").returncode == 0
    first = Running(cfg)
    for job in ("collect", "feeds", "weather"):  # collect (and the feed build after it) and weather start at once
        wait_for(functools.partial(_job_ran, cfg, job), 60, f"{job} did not run")
    code, err = first.stop()
    assert code == 0, err
    _move_job(cfg, "deliveries", datetime.now(UTC) - timedelta(minutes=1))  # the retry job, when due
    retries = Running(cfg)
    wait_for(lambda: ("deliveries", "ok") in _job_runs(cfg), 60, "the deliveries job did not run")
    assert retries.stop()[0] == 0
    status = _cli(cfg, "status")
    assert "collect" in status.stdout and "ok" in status.stdout and "digest" in status.stdout

    # Down across the send time, back within the grace (3 h): the digest goes out once.
    _move_job(cfg, "digest", datetime.now(UTC) - timedelta(minutes=30))
    second = Running(cfg)
    wait_for(lambda: _mails(tmp_path / "mail") == 1, 60, "the missed digest was not sent within the grace")
    assert second.stop()[0] == 0
    third = Running(cfg)  # a restart never runs it twice
    time.sleep(3)
    assert third.stop()[0] == 0
    assert _mails(tmp_path / "mail") == 1
    assert [s for j, s in _job_runs(cfg) if j == "digest"] == ["ok"]

    # Down for longer than the grace: skipped, said so, and no mail.
    _move_job(cfg, "digest", datetime.now(UTC) - timedelta(hours=4))
    fourth = Running(cfg)
    wait_for(lambda: ("digest", "skipped") in _job_runs(cfg), 60, "the digest was not recorded as skipped")
    assert fourth.stop()[0] == 0
    assert _mails(tmp_path / "mail") == 1
    assert "skipped" in _cli(cfg, "status").stdout


def test_sigterm_mid_send_loses_nothing(tmp_path: Path, feed_server: FeedServer) -> None:
    from tests.test_deliver import _start_sink, _subscribers_csv

    handler, controller, port = _start_sink(delay=0.02)
    try:
        cfg = _config(tmp_path, feed_server)
        cfg.write_text(
            cfg.read_text(encoding="utf-8").replace(
                "[web]", f'[delivery.smtp]\nhost = "127.0.0.1"\nport = {port}\ntls = "none"\npool_size = 4\n\n[web]'
            ),
            encoding="utf-8",
        )
        n = 200
        assert _cli(cfg, "subscribers", "import", str(_subscribers_csv(tmp_path / "s.csv", n))).returncode == 0
        day = datetime.now(UTC).astimezone(load_settings(cfg).site.tz).date().isoformat()
        assert _cli(cfg, "digest", "send", "--date", day, "--queue-only").returncode == 0
        worker = subprocess.Popen(
            [sys.executable, "-m", "feedservice", "--config", str(cfg), "worker", "--date", day, "--once"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: len(handler.received) >= 40, 60, "the worker did not get going")
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
        assert worker.returncode == 0 and time.monotonic() - started < 10
        assert len(handler.received) < n
        again = _cli(cfg, "worker", "--date", day, "--once")
        assert again.returncode == 0, again.stderr
        counts = collections.Counter(to for to, _ in handler.received)
        assert len(counts) == n and set(counts.values()) == {1}  # nothing lost, nothing twice
    finally:
        controller.stop()


@pytest.mark.postgres
def test_one_leader_among_two_and_takeover(tmp_path: Path, feed_server: FeedServer, postgres_url: str) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    a = Running(_config(a_dir, feed_server, db_url=postgres_url))
    b = Running(_config(b_dir, feed_server, db_url=postgres_url))
    wait_for(lambda: ("collect", "ok") in _job_runs(a.cfg), 60, "nobody schedules")
    assert [j for j, _ in _job_runs(a.cfg)].count("collect") == 1  # one leader: collect ran once, not twice
    first_leader, other = (a, b) if _leads(a) else (b, a)
    first_leader.proc.kill()  # the leader dies; the other must take over within the retry time
    first_leader.proc.wait(10)
    wait_for(lambda: _leads(other), 60, "nobody took over after the leader was killed")
    code, log = other.stop()
    assert code == 0 and log.count("this process schedules the jobs") == 1


def test_readyz_metrics_and_status(tmp_path: Path, feed_server: FeedServer) -> None:
    import asyncio

    cfg = _config(tmp_path, feed_server)
    app = make_app(load_settings(cfg))
    try:
        client = TestClient(create_app(app), base_url="http://localhost")
        not_yet = client.get("/readyz")
        assert not_yet.status_code == 503 and "no source" in not_yet.text
        asyncio.run(app.collect())
        assert client.get("/readyz").status_code == 200
        run_id = app.store.job_started("collect", datetime.now(UTC))
        app.store.job_finished(run_id, "ok", datetime.now(UTC) + timedelta(seconds=2))
        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
        sources = {s.labels["state"]: s.value for s in families["feedservice_sources"].samples}
        assert sources["ok"] == 1 and sources["failing"] == 0
        assert families["feedservice_articles"].samples[0].value == 1
        assert families["feedservice_job_last_duration_seconds"].samples[0].value == pytest.approx(2, abs=0.5)
        assert {s.labels["job"] for s in families["feedservice_job_last_success_timestamp_seconds"].samples} == {
            "collect"
        }
        asyncio.run(app.publish_feeds())
        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
        runs = {(s.labels["job"], s.labels["status"]): s.value for s in families["feedservice_job_runs"].samples}
        assert runs[("feeds", "ok")] == 1 and runs[("collect", "ok")] == 1  # feed builds are counted
    finally:
        app.close()


def test_ctrl_c_stops_run_with_its_parser_processes_and_no_traceback(tmp_path: Path, feed_server: FeedServer) -> None:
    """Ctrl-C in a terminal sends SIGINT to the whole process group, parser processes included."""
    cfg = _config(tmp_path, feed_server)
    cfg.write_text(
        cfg.read_text(encoding="utf-8").replace("[collect]\n", "[collect]\nparse_processes = 2\n", 1), encoding="utf-8"
    )
    command = [sys.executable, "-m", "feedservice", "--config", str(cfg), "run"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: ("collect", "ok") in _job_runs(cfg), 60, "the first collect did not run")  # the pool is up
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, err
    assert "parser processes started" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
