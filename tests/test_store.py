"""The storage adapter on SQLite and PostgreSQL alike: schema, articles, ledger, observations."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Unpack

import pytest
import sqlalchemy as sa

from feedservice.adapters.store import open_store
from feedservice.adapters.store.bounces import STALE_KEPT
from feedservice.adapters.store.migrations import LATEST, MIGRATIONS
from feedservice.model import Article, ArticleFields, DeliveryStatus, Edition, Observation, Section, SubscriberStatus
from tests.conftest import subscriber

NOW = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)


def _article(n: int, **kw: Unpack[ArticleFields]) -> Article:
    base = Article(
        id=f"https://www.newsspace.kr/news/articleView.html?idxno={n}",
        url=f"https://www.newsspace.kr/news/articleView.html?idxno={n}",
        section="bigtech",
        title=f"빅테크 기사 {n}",
        summary_html=f"<p>요약 {n}</p>",
        author="김정영",
        categories=("빅테크",),
        published=NOW - timedelta(hours=n),
        source_url="http://127.0.0.1/rss.xml",
    )
    return replace(base, **kw)


def test_open_migrates_once_and_reopens(db_url: str) -> None:
    store = open_store(db_url)
    assert store.schema_version() == LATEST
    store.close()
    again = open_store(db_url)  # a second open applies nothing and keeps data
    assert again.schema_version() == LATEST
    with again.engine.connect() as conn:
        # one row per migration (numbers may have gaps: each change takes its own number)
        assert conn.execute(sa.text("SELECT count(*) FROM schema_version")).scalar() == len(MIGRATIONS)
    again.close()


def test_articles_new_unchanged_and_updated(db_url: str) -> None:
    store = open_store(db_url)
    store.sync_sections([Section("bigtech", "빅테크"), Section("space-sociology", "공간사회학")])
    store.sync_sources([("http://127.0.0.1/rss.xml", "bigtech", "테스트")])
    arts = [_article(n) for n in range(1, 4)]
    assert store.record_fetch_success(
        "http://127.0.0.1/rss.xml", NOW, NOW, etag='"a"', last_modified=None, articles=arts
    ) == (3, 0)
    # The same entries again: nothing rewritten.
    later = NOW + timedelta(minutes=15)
    assert store.record_fetch_success(
        "http://127.0.0.1/rss.xml", later, later, etag='"a"', last_modified=None, articles=arts
    ) == (0, 0)
    # A corrected title updates in place and bumps `updated`; never a second article.
    fixed = [replace(arts[0], title="빅테크 기사 1 (수정)"), *arts[1:]]
    assert store.record_fetch_success(
        "http://127.0.0.1/rss.xml", later, later, etag='"b"', last_modified=None, articles=fixed
    ) == (0, 1)
    assert store.count_articles() == 3
    newest = store.recent_articles("bigtech", 10)
    assert [a.title for a in newest] == ["빅테크 기사 1 (수정)", "빅테크 기사 2", "빅테크 기사 3"]
    assert newest[0].updated == later and newest[0].published == NOW - timedelta(hours=1)
    assert newest[0].published.tzinfo is not None
    assert store.recent_articles("space-sociology", 10) == []
    window = store.articles_for_edition(NOW - timedelta(hours=1), NOW, NOW - timedelta(hours=2, minutes=30))
    assert [a.title for a in window] == ["빅테크 기사 1 (수정)", "빅테크 기사 2"]
    [src] = store.list_sources()
    assert (src.etag, src.articles, src.failures, src.last_success) == ('"b"', 3, 0, later)
    [light] = store.list_sources(with_counts=False)  # what each collect reads: no count of articles
    assert light == replace(src, articles=0)
    store.close()


def test_fetch_failures_count_up_and_reset(db_url: str) -> None:
    store = open_store(db_url)
    store.sync_sources([("http://127.0.0.1/a.xml", "bigtech", None)])
    store.record_fetch_failure("http://127.0.0.1/a.xml", "HTTP 500", NOW, NOW + timedelta(minutes=30))
    store.record_fetch_failure("http://127.0.0.1/a.xml", "timed out", NOW, NOW + timedelta(hours=1))
    [src] = store.list_sources()
    assert (src.failures, src.last_error, src.next_attempt) == (2, "timed out", NOW + timedelta(hours=1))
    store.record_fetch_success("http://127.0.0.1/a.xml", NOW, NOW, etag=None, last_modified="x")
    [src] = store.list_sources()
    assert (src.failures, src.last_error) == (0, None)
    store.close()


def test_delivery_ledger_is_unique_per_edition_and_subscriber(db_url: str) -> None:
    store = open_store(db_url)
    a, _ = store.add_subscriber("a@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)
    b, _ = store.add_subscriber("b@example.com", ("bigtech",), SubscriberStatus.SUBSCRIBED, NOW)
    day = date(2026, 11, 28)
    ed = Edition(day, NOW - timedelta(hours=24), NOW, "제목")
    assert store.save_edition(ed, "<html>", "text", NOW) is True
    assert store.save_edition(ed, "<html>other", "other", NOW) is False  # the first stays
    rows = [(a.id, a.email, "<m1@x>"), (b.id, b.email, "<m2@x>")]
    assert store.enqueue_deliveries(day, rows, NOW) == 2
    assert store.enqueue_deliveries(day, rows, NOW) == 0  # re-running queues nobody twice
    lease = timedelta(seconds=60)
    due = store.claim_deliveries(day, NOW, 10, "w1", lease)
    got = [(d.email, s.sections if s else None) for d, s in due]
    assert got == [("a@example.com", ()), ("b@example.com", ("bigtech",))]
    assert store.claim_deliveries(day, NOW, 10, "w2", lease) == []  # claimed: nobody else gets them
    store.mark_deliveries(
        [
            (due[0][0].id, DeliveryStatus.SENT, "250 OK", None),
            (due[1][0].id, DeliveryStatus.DEFERRED, "451 try later", NOW + timedelta(minutes=5)),
        ],
        NOW,
    )
    assert store.claim_deliveries(day, NOW, 10, "w2", lease) == []
    assert store.editions_with_work(NOW) == []
    [(again, _)] = store.claim_deliveries(day, NOW + timedelta(minutes=5), 10, "w2", lease)
    assert again.email == "b@example.com" and again.attempts == 1
    assert store.delivery_counts(day) == {"queued": 0, "sending": 1, "sent": 1, "deferred": 0, "failed": 0}
    # A worker that dies keeps its rows only until the lease runs out; one that stops hands them back.
    assert store.claim_deliveries(day, NOW + timedelta(minutes=5, seconds=30), 10, "w3", lease) == []
    # A worker slower than its lease never claims (and sends) its own row a second time.
    assert store.claim_deliveries(day, NOW + timedelta(minutes=6, seconds=1), 10, "w2", lease) == []
    [(taken, _)] = store.claim_deliveries(day, NOW + timedelta(minutes=6, seconds=1), 10, "w3", lease)
    store.release_deliveries([taken.id], "w3", NOW)
    assert store.delivery_counts(day)["queued"] == 1 and store.editions_with_work(NOW) == [day]
    stored = store.get_edition(day)
    assert stored is not None and stored[1] == "<html>"
    store.close()


def test_subscribers_stream_in_batches(db_url: str) -> None:
    store = open_store(db_url)
    for i in range(25):
        store.add_subscriber(f"r{i:02d}@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)
    store.add_subscriber("gone@example.com", (), SubscriberStatus.UNSUBSCRIBED, NOW)
    got = [s.email for s in store.iter_subscribers(SubscriberStatus.SUBSCRIBED, batch=7)]
    assert got == [f"r{i:02d}@example.com" for i in range(25)]
    assert len(list(store.iter_subscribers())) == 26
    store.close()


def test_one_call_sets_a_subscribers_status_by_id_or_by_address(db_url: str) -> None:
    """The web changes a reader by id (with their sections), suppression and the CLI by address."""
    store = open_store(db_url, address_key=b"k")
    sub, _ = store.add_subscriber("reader@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)
    assert store.set_subscriber_status(sub.id, SubscriberStatus.SUBSCRIBED, ["bigtech"])
    assert subscriber(store, "reader@example.com").sections == ("bigtech",)
    assert store.set_subscriber_status("reader@example.com", SubscriberStatus.SUPPRESSED)
    gone = store.get_subscriber_by_id(sub.id)
    assert gone is not None and gone.email == "" and gone.status is SubscriberStatus.SUPPRESSED  # forgotten
    # Still found by its address (through the kept hash): unsubscribing it again is no error.
    assert store.set_subscriber_status("reader@example.com", SubscriberStatus.UNSUBSCRIBED)
    assert not store.set_subscriber_status("nobody@example.com", SubscriberStatus.UNSUBSCRIBED)
    assert not store.set_subscriber_status(sub.id + 1, SubscriberStatus.UNSUBSCRIBED)
    store.close()


def test_latest_observation_per_station(db_url: str) -> None:
    store = open_store(db_url)
    old = Observation(108, "서울", NOW - timedelta(hours=1), 28.0, "맑음", provider="kma")
    new = Observation(108, "서울", NOW, 29.1, "구름조금", provider="kma")
    missing_temp = Observation(152, "울산", NOW, None, "연무", provider="kma")
    store.save_observations([old, new, missing_temp], NOW)
    store.save_observations([new], NOW)  # idempotent
    latest = store.latest_observations([108, 152, 159])
    assert latest[108].temperature == 29.1 and latest[108].condition == "구름조금"
    assert latest[152].temperature is None
    assert 159 not in latest
    store.close()


def test_naive_datetimes_are_refused(db_url: str) -> None:
    from feedservice.errors import StorageError

    store = open_store(db_url)
    with pytest.raises((StorageError, ValueError)):
        store.save_observations([Observation(108, "서울", datetime(2026, 1, 1), 1.0, None)], NOW)
    store.close()


def test_several_processes_starting_at_once_all_open_and_sync(db_url: str) -> None:
    """`run`/`worker` processes started together each migrate and sync the configured sections
    and sources; none of them may fail on the others' rows (a delete-then-insert did, on PG)."""
    import threading

    sections = [Section("bigtech", "빅테크"), Section("space-sociology", "공간사회학")]
    sources = [("http://127.0.0.1/a.xml", "bigtech", "가"), ("http://127.0.0.1/b.xml", "space-sociology", None)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            barrier.wait()
            store = open_store(db_url)
            try:
                for _ in range(20):
                    store.sync_sections(sections)
                    store.sync_sources(sources)
            finally:
                store.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    store = open_store(db_url)
    with store.engine.connect() as conn:
        slugs = conn.execute(sa.text("SELECT slug FROM sections ORDER BY position")).scalars().all()
    assert slugs == ["bigtech", "space-sociology"]
    assert sorted(s.url for s in store.list_sources()) == [u for u, _, _ in sources]
    store.close()


def test_a_database_of_an_older_release_is_upgraded_in_place(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from feedservice.adapters.store import migrations, schema
    from feedservice.adapters.store._base import make_engine

    engine = make_engine(db_url)
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])  # what release 1 shipped
    assert migrations.migrate(engine) == [1]
    monkeypatch.undo()
    with engine.begin() as conn:
        conn.execute(
            schema.subscribers.insert().values(
                email="a@example.com", email_hash="h1:a", status="subscribed", sections=[], created=NOW
            )
        )
    engine.dispose()
    store = open_store(db_url)  # applies what is missing, keeps the data
    assert store.schema_version() == LATEST
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM subscribers")).scalar() == 1
        indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("deliveries")}
    assert "ix_deliveries_claim" in indexes and "ix_deliveries_edition_status" not in indexes
    store.close()


def test_a_replayed_webhook_event_is_found_by_index(db_url: str) -> None:
    """Migration 18: ``bounce_source_known`` (is this provider event id recorded?) reads an index,
    not every piece of returned mail ever kept."""
    store = open_store(db_url)
    with store.engine.connect() as conn:
        indexes = {ix["name"]: ix["column_names"] for ix in sa.inspect(conn).get_indexes("bounce_mail")}
        assert indexes["ix_bounce_mail_source"] == ["source"]
        query = "SELECT id FROM bounce_mail WHERE source = 'webhook:ses/m-1' LIMIT 1"
        if store.engine.dialect.name == "sqlite":
            plan = " ".join(str(r[-1]) for r in conn.execute(sa.text(f"EXPLAIN QUERY PLAN {query}")))
        else:  # an empty table: make a sequential scan the planner's last resort, to see the index is usable
            conn.execute(sa.text("SET enable_seqscan = off"))
            plan = " ".join(r[0] for r in conn.execute(sa.text(f"EXPLAIN {query}")))
    assert "ix_bounce_mail_source" in plan, plan
    assert not store.bounce_source_known("webhook:ses/m-1")
    store.close()


def test_a_new_sqlite_database_keeps_several_articles_per_page(tmp_path: Path) -> None:
    # Articles are a few KB of Korean HTML each: 4 KB pages would hold one apiece.
    store = open_store(f"sqlite:///{tmp_path}/new.db")
    store.record_fetch_success(
        "http://127.0.0.1/rss.xml",
        NOW,
        NOW,
        etag=None,
        last_modified=None,
        articles=[_article(n, summary_html="<p>" + "가나다라 " * 300 + "</p>") for n in range(30)],
    )
    with store.engine.connect() as conn:
        page_size = conn.execute(sa.text("PRAGMA page_size")).scalar()
        pages = conn.execute(sa.text("SELECT count(*) FROM dbstat WHERE name = 'articles'")).scalar()
    store.close()
    assert page_size == 16384
    assert pages is not None and pages < 15


def test_an_articles_digest_travels_with_it_and_follows_its_changes() -> None:
    import pickle

    a = _article(1)
    again = pickle.loads(pickle.dumps(a))
    assert again == a and again.content_hash() == a.content_hash()
    # replace() makes a new article: routing it to another section or retitling it changes the digest.
    assert replace(a, section="space").content_hash() != a.content_hash()
    assert replace(again, title="새 제목").content_hash() != a.content_hash()
    assert replace(a, updated=NOW).content_hash() == a.content_hash()  # not something a reader sees change


def test_the_bounce_breaker_counts_suppressions_within_a_day_and_an_operator_releases_what_it_held(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 22: suppressions made by returned mail within the window, those held, and the
    release (which applies the held ones and starts the window again), on SQLite and PostgreSQL;
    a database made at migration 18 (before ``bounce_mail.held``) gains the column in place."""
    from feedservice.adapters.store import migrations
    from feedservice.adapters.store._base import make_engine
    from feedservice.bounce_model import BounceKind, BounceRow

    engine = make_engine(db_url)
    monkeypatch.setattr(migrations, "MIGRATIONS", [m for m in migrations.MIGRATIONS if m[0] <= 18])
    migrations.migrate(engine)
    monkeypatch.undo()
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE bounce_mail DROP COLUMN held"))
    engine.dispose()
    store = open_store(db_url)
    with store.engine.connect() as conn:  # each webhook call asks: by index, not every row ever kept
        assert "ix_bounce_mail_held" in {ix["name"] for ix in sa.inspect(conn).get_indexes("bounce_mail")}
        assert "ix_suppressions_at" in {ix["name"] for ix in sa.inspect(conn).get_indexes("suppressions")}
    ids = [store.add_subscriber(f"r{i}@example.com", (), SubscriberStatus.SUBSCRIBED, NOW)[0].id for i in range(4)]
    day = timedelta(hours=24)

    def row(n: int, at: datetime, *, suppress: bool = True) -> BounceRow:
        reason = f"hard bounce 5.1.1: {n}"
        return BounceRow(
            digest=f"d{n}",
            received=at,
            source=f"webhook:test/{n}",
            kind=BounceKind.HARD,
            raw=b"x",
            subscriber_id=ids[n],
            matched_by="recipient",
            action="suppressed" if suppress else "held",
            suppress=reason if suppress else None,
            held=None if suppress else reason,
        )

    assert store.record_bounce(row(0, NOW - timedelta(hours=25)))  # outside the window
    assert store.record_bounce(row(1, NOW - timedelta(hours=1)))
    assert store.record_bounce(row(2, NOW, suppress=False))
    assert store.record_bounce(row(3, NOW, suppress=False))
    window = store.breaker_window(NOW, day)
    assert (window.since, window.suppressed, window.held) == (NOW - day, 1, 2)

    def status(sid: int) -> SubscriberStatus | None:
        sub = store.get_subscriber_by_id(sid)
        return sub.status if sub else None

    assert status(ids[2]) is SubscriberStatus.SUBSCRIBED
    later = NOW + timedelta(minutes=5)
    assert store.release_held_bounces(later) == 2
    for sid in ids[2:]:
        assert status(sid) is SubscriberStatus.SUPPRESSED
        [(at, reason, bounce_id)] = store.suppression_reasons(sid)
        assert (at, reason.startswith("hard bounce 5.1.1"), bounce_id is not None) == (later, True, True)
    assert store.list_bounces()[-1].action.startswith("suppressed (held by the breaker, released")
    assert store.breaker_window(later, day) == type(window)(later, 0, 0)  # the window starts again
    assert store.release_held_bounces(later) == 0
    store.close()


def test_a_webhook_token_is_bound_to_one_body_for_every_process_until_it_is_stale(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 19: Mailgun signs a timestamp and a token, not the body, so a token is bound to the
    digest of its call's body in the database: a second store (another web worker) sees the
    binding, and of many workers binding one new token with two bodies at once exactly one body
    wins. A database at migration 22 without 19 (made before it) gains the table in place."""
    from concurrent.futures import ThreadPoolExecutor

    from feedservice.adapters.store import migrations
    from feedservice.adapters.store._base import make_engine

    engine = make_engine(db_url)
    monkeypatch.setattr(migrations, "MIGRATIONS", [m for m in migrations.MIGRATIONS if m[0] != 19])
    migrations.migrate(engine)
    monkeypatch.undo()
    engine.dispose()
    first, second = open_store(db_url), open_store(db_url)
    stale_at, a, b = NOW + timedelta(seconds=300), "a" * 64, "b" * 64
    try:
        assert first.bind_webhook_token("mailgun/t", a, stale_at, NOW)
        assert second.bind_webhook_token("mailgun/t", a, stale_at, NOW + timedelta(seconds=10))  # a retry
        assert not second.bind_webhook_token("mailgun/t", b, stale_at, NOW + timedelta(seconds=20))  # a forgery
        assert not first.bind_webhook_token("mailgun/t", b, stale_at, NOW + timedelta(seconds=300))

        def bind(n: int) -> tuple[str, bool]:
            body = (a, b)[n % 2]
            return body, (first, second)[n // 2 % 2].bind_webhook_token("mailgun/race", body, stale_at, NOW)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(bind, range(32)))
        winners = {body for body, bound in results if bound}
        assert len(winners) == 1 and [bound for body, bound in results] == [body in winners for body, _ in results]

        # Another worker's call a moment after a token went stale, then a replay of that token
        # with another body judged fresh at its last instant (stale_at): still refused. Dropping
        # the binding at once let the replay bind its own body in its place.
        assert first.bind_webhook_token("mailgun/edge", a, stale_at, NOW)
        moment_later = stale_at + timedelta(seconds=1)
        assert second.bind_webhook_token("mailgun/next", a, stale_at + timedelta(hours=1), moment_later)
        assert not first.bind_webhook_token("mailgun/edge", b, stale_at, stale_at)

        # Once stale for longer than any call takes, the bindings go (the next call drops them);
        # a new call's token is bound anew.
        later = stale_at + timedelta(hours=1) + STALE_KEPT + timedelta(seconds=1)
        assert first.bind_webhook_token("mailgun/u", b, later + timedelta(hours=1), later)
        with first.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT token FROM webhook_tokens")).scalars().all() == ["mailgun/u"]
    finally:
        first.close()
        second.close()
