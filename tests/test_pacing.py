"""Pacing per mailbox provider (issue 16): a relay on 127.0.0.1 that throttles one domain the way
Naver does (``421 4.3.1 … too many messages``) while other domains are accepted, and the pure
rules of when a throttle pauses a domain and for how long."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from feedservice.config import parse_settings
from feedservice.errors import ConfigError, DeliveryError
from feedservice.model import DomainPause
from feedservice.services.pacing import DomainPacer, LaneRule
from feedservice.services.replies import next_pause, throttled
from tests.conftest import FeedServer, free_port
from tests.test_deliver import FRESH, TODAY, FaultySink, _add, _app, _deliveries, _run

NAVER_THROTTLE = "421 4.3.1 Too many messages, try later (naver.com)"
T0 = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
BASE = timedelta(seconds=300)


GROUPS = {"hanmail.net": "daum", "kakao.com": "daum", "daum.net": "daum"}  # as PACING below groups them


class ThrottlingRelay(FaultySink):
    """Accepts everything, but for ``naver.com``: ``accept`` messages, then a 421 to every RCPT
    while ``throttling``. Counts messages in flight per domain, and naver RCPTs after the first 421."""

    def __init__(self, accept: int) -> None:
        super().__init__(delay=0.03)
        self.accept, self.throttling = accept, True
        self.done: list[tuple[str, float]] = []  # (domain, monotonic time) of each accepted message
        self.in_flight: Counter[str] = Counter()  # by domain, and by provider group
        self.most: Counter[str] = Counter()
        self.rcpts_after_throttle = 0
        self.throttled = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        domain = address.rpartition("@")[2]
        if domain == "naver.com":
            if self.throttled:
                self.rcpts_after_throttle += 1
            accepted_naver = sum(1 for to, _ in self.received if to.endswith("@naver.com"))
            if self.throttling and accepted_naver + self.in_flight["naver.com"] >= self.accept:
                self.throttled += 1
                return NAVER_THROTTLE
        for key in {domain, GROUPS.get(domain, domain)}:
            self.in_flight[key] += 1
            self.most[key] = max(self.most[key], self.in_flight[key])
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        domain = envelope.rcpt_tos[0].rpartition("@")[2]
        try:
            return await super().handle_DATA(server, session, envelope)
        finally:
            self.done.append((domain, time.monotonic()))
            for key in {domain, GROUPS.get(domain, domain)}:
                self.in_flight[key] -= 1


PACING = """domain_pause_seconds = 20
[delivery.domains."naver.com"]
concurrency = 2
[delivery.domains.daum]
domains = ["daum.net", "hanmail.net", "kakao.com"]
concurrency = 1
"""


def test_a_throttling_domain_pauses_alone_and_loses_nothing(tmp_path: Path, feed_server: FeedServer) -> None:
    relay = ThrottlingRelay(accept=3)
    port = free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=port)
    controller.start()
    shift = [timedelta(0)]
    app = _app(
        tmp_path,
        feed_server,
        port,
        smtp_extra="pool_size = 6",
        delivery_extra=PACING,
        clock=lambda: datetime.now(UTC) + shift[0],
        items=FRESH,
    )
    naver = [f"n{i:02d}@naver.com" for i in range(12)]
    daum = [f"d{i}@hanmail.net" for i in range(3)] + ["k@kakao.com"]
    others = [f"r{i:02d}@example.com" for i in range(24)]
    day = datetime.fromisoformat(TODAY).date()
    try:
        _add(app, *naver, *daum, *others)
        first = asyncio.run(app.send_digest(day))
        got = Counter(to for to, _ in relay.received)
        # Other domains at full speed: all sent in this run, several at once; the daum group one at a time.
        assert all(got[a] == 1 for a in others + daum)
        assert relay.most["example.com"] >= 3 and relay.most["daum"] == 1
        assert relay.most["naver.com"] <= 2
        # Naver throttled us once its 3 were in: at most its concurrency (2) tried after the first 421.
        assert relay.throttled >= 1 and relay.rcpts_after_throttle <= 1
        assert sum(got[a] for a in naver) == 3
        assert "naver.com" in first.domains_paused and "naver.com throttled us" in first.summary()
        assert first.sent == 3 + len(daum) + len(others) and first.failed == 0
        waiting = {d.email: d for d in _deliveries(app) if d.email.endswith("@naver.com") and d.status.value != "sent"}
        assert len(waiting) == 9 and {d.status.value for d in waiting.values()} == {"deferred"}
        assert all(d.next_attempt is not None and d.next_attempt > datetime.now(UTC) for d in waiting.values())
        # `digest status` (another process, a restart) shows the pause and until when.
        status = _run(Path(app.settings.source_path), "digest", "status", "--date", TODAY)
        assert status.returncode == 0
        assert "naver.com paused until" in status.stdout and "4.3.1" in status.stdout
        # A new process honours the recorded pause: a reader added now is not tried at naver yet.
        app.close()
        relay.throttling = False
        app = _app(
            tmp_path,
            feed_server,
            port,
            smtp_extra="pool_size = 6",
            delivery_extra=PACING,
            clock=lambda: datetime.now(UTC) + shift[0],
            items=FRESH,
        )
        _add(app, "late@naver.com")
        rcpts = relay.rcpts_after_throttle
        second = asyncio.run(app.send_digest(day))
        assert second.sent == 0 and relay.rcpts_after_throttle == rcpts
        # After the pause, everything is delivered, each message exactly once.
        shift[0] = timedelta(seconds=21)
        third = asyncio.run(app.send_digest(day))
        got = Counter(to for to, _ in relay.received)
        assert third.sent == 10 and all(got[a] == 1 for a in [*naver, "late@naver.com", *daum, *others])
        assert {d.status.value for d in _deliveries(app)} == {"sent"}
        assert relay.most["naver.com"] <= 2
    finally:
        app.close()
        controller.stop()


def test_per_minute_spaces_one_provider_only(tmp_path: Path, feed_server: FeedServer) -> None:
    relay = ThrottlingRelay(accept=100)
    port = free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=port)
    controller.start()
    pacing = '[delivery.domains."naver.com"]\nconcurrency = 4\nper_minute = 120\n'  # one every 0.5 s
    app = _app(tmp_path, feed_server, port, smtp_extra="pool_size = 4", delivery_extra=pacing, clock=None, items=FRESH)
    try:
        _add(app, *[f"n{i}@naver.com" for i in range(5)], *[f"r{i:02d}@example.com" for i in range(12)])
        report = asyncio.run(app.send_digest(datetime.fromisoformat(TODAY).date()))
        assert report.sent == 17
        naver = [t for d, t in relay.done if d == "naver.com"]
        others = [t for d, t in relay.done if d == "example.com"]
        assert len(naver) == 5 and naver[-1] - naver[0] >= 1.8  # 4 intervals of 0.5 s, less the DATA time
        assert max(others) < naver[-1]  # example.com was not held to naver's pace
    finally:
        app.close()
        controller.stop()


@pytest.mark.parametrize(
    ("code", "text", "permanent", "expected"),
    [
        (421, "421 4.3.1 Too many messages", False, True),  # Naver
        (421, "421 4.7.0 Try again later, closing connection", False, True),
        (450, "450 4.7.1 Rate limited", False, True),
        (451, "451 Too many connections from your IP", False, True),
        (451, "451 4.2.2 Mailbox full, try later", False, False),
        (550, "550 5.7.1 Too many complaints: rejected", True, False),  # permanent: a policy refusal, not a pause
        (550, "550 5.1.1 No such user", True, False),
    ],
)
def test_which_replies_throttle(code: int, text: str, permanent: bool, expected: bool) -> None:
    from feedservice.adapters.smtp import enhanced_code

    assert throttled(DeliveryError(text, code=code, permanent=permanent, enhanced=enhanced_code(text))) is expected


@pytest.mark.parametrize(
    ("previous", "now", "until", "strikes"),
    [
        (None, T0, T0 + BASE, 1),  # a first throttle: the configured pause
        (DomainPause("naver.com", T0 + BASE, 1, "x"), T0 + timedelta(seconds=10), T0 + BASE, 1),  # same episode
        (DomainPause("naver.com", T0, 1, "x"), T0 + timedelta(seconds=1), T0 + timedelta(seconds=601), 2),  # doubles
        (DomainPause("naver.com", T0, 3, "x"), T0, T0 + timedelta(seconds=2400), 4),  # 300 s × 2³
        (DomainPause("naver.com", T0, 9, "x"), T0, T0 + timedelta(hours=1), 10),  # at most an hour
        (DomainPause("naver.com", T0, 5, "x"), T0 + timedelta(hours=2), T0 + timedelta(hours=2) + BASE, 1),  # forgiven
    ],
)
def test_next_pause(previous: DomainPause | None, now: datetime, until: datetime, strikes: int) -> None:
    pause = next_pause(previous, "naver.com", "421", now=now, base=BASE)
    assert (pause.until, pause.strikes) == (until, strikes)


def test_lanes_by_domain_and_group() -> None:
    pacer = DomainPacer(
        [LaneRule("daum", ("daum.net", "hanmail.net", "kakao.com"), 1)], [DomainPause("naver.com", T0, 1, "421")]
    )
    assert pacer.lane_for("a@Hanmail.NET") is pacer.lane_for("b@kakao.com")
    assert pacer.lane_for("a@naver.com").paused_until(T0 - timedelta(seconds=1)) == T0
    assert pacer.lane_for("a@example.com").rule.concurrency is None


def _settings(delivery: dict[str, Any]) -> Any:
    return parse_settings(
        {
            "site": {"name": "n", "url": "https://n.kr"},
            "digest": {"from": "a@n.kr"},
            "sections": [{"slug": "a", "title": "A"}],
            "delivery": delivery,
        }
    )


@pytest.mark.parametrize(
    ("domains", "message"),
    [
        ({"naver": {"concurrency": 2}}, "not a domain"),
        ({"daum": {"domains": ["daum.net"]}, "daum.net": {"concurrency": 1}}, "already paced by 'daum'"),
        ({"naver.com": {"concurrency": 0}}, "concurrency"),
    ],
)
def test_domains_config_errors(domains: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _settings({"domains": domains})
