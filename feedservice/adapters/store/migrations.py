"""Numbered migrations, shared by SQLite and PostgreSQL.

Each migration runs in its own transaction and records its number in
``schema_version``; ``migrate`` applies whatever a database lacks, so opening a
store always leaves it on the newest schema (the ``Table`` objects of ``schema``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from feedservice.adapters.store.schema import (
    articles,
    bounce_mail,
    breaker_releases,
    deliveries,
    domain_pauses,
    edition_articles,
    editions,
    held_suppressions,
    job_runs,
    key_fingerprints,
    schema_version,
    sections,
    send_pauses,
    sources,
    subscribers,
    suppressions,
    weather_observations,
    webhook_tokens,
)

_V1_TABLES = [
    sections,
    sources,
    articles,
    subscribers,
    weather_observations,
    editions,
    edition_articles,
    deliveries,
    job_runs,
]


def _v1(conn: Connection) -> None:
    for table in _V1_TABLES:
        table.create(conn)


def _v2(conn: Connection) -> None:
    # Claiming deliveries asks for the lowest ids of one edition in one status. With (edition,
    # status) alone, PostgreSQL sorted and SQLite walked every row of the edition for each claim:
    # 50 ms per claim at 100,000 recipients. The id in the index gives them in order.
    conn.execute(sa.text("CREATE INDEX ix_deliveries_claim ON deliveries (edition, status, id)"))
    conn.execute(sa.text("DROP INDEX ix_deliveries_edition_status"))


def _v3(conn: Connection) -> None:
    send_pauses.create(conn)


def _v4(conn: Connection) -> None:
    # Step 1 creates the subscribers table from its Table in ``schema``, which has the column already;
    # only a database made before it needs the column added.
    columns = {c["name"] for c in sa.inspect(conn).get_columns("subscribers")}
    if "token_version" not in columns:
        conn.execute(sa.text("ALTER TABLE subscribers ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0"))


def _v6(conn: Connection) -> None:
    # Feed archives are read page by page in first-stored order, by keyset on (first_seen, id):
    # one index per shape of query, for a section and for "all" (which had none and was sorted
    # in full for every page). The old (section, first_seen) index is a prefix of the new one.
    # "all"'s current feed asks for the newest by published, which had no index either.
    conn.execute(sa.text("CREATE INDEX ix_articles_archive ON articles (section, first_seen, id)"))
    conn.execute(sa.text("CREATE INDEX ix_articles_archive_all ON articles (first_seen, id)"))
    conn.execute(sa.text("CREATE INDEX ix_articles_published ON articles (published, id)"))
    conn.execute(sa.text("DROP INDEX ix_articles_section_first_seen"))


def _v11(conn: Connection) -> None:
    held_suppressions.create(conn)
    key_fingerprints.create(conn)


def _v16(conn: Connection) -> None:
    domain_pauses.create(conn)


def _v17(conn: Connection) -> None:
    bounce_mail.create(conn)
    suppressions.create(conn)
    # A complaint names its delivery by the original's Message-ID: found by index, not by
    # reading every delivery ever made.
    conn.execute(sa.text("CREATE INDEX ix_deliveries_message_id ON deliveries (message_id)"))


def _v18(conn: Connection) -> None:
    # A webhook call asks whether its provider's event id was recorded (``bounce_source_known``, a
    # replay): by index, not by reading every piece of returned mail ever kept (never deleted).
    conn.execute(sa.text("CREATE INDEX ix_bounce_mail_source ON bounce_mail (source)"))


def _v19(conn: Connection) -> None:
    # Mailgun's tokens bound to their call's body in the database, so the binding holds across
    # web workers and restarts (it was each process's memory).
    webhook_tokens.create(conn)


def _v22(conn: Connection) -> None:
    # Step 17 creates bounce_mail from its Table in ``schema``, which has the column already; only a
    # database made before it needs the column added.
    if "held" not in {c["name"] for c in sa.inspect(conn).get_columns("bounce_mail")}:
        conn.execute(sa.text("ALTER TABLE bounce_mail ADD COLUMN held TEXT"))
    breaker_releases.create(conn)
    # Each bounce check (each webhook call) counts suppressions within a window, and those held: by index.
    conn.execute(sa.text("CREATE INDEX ix_suppressions_at ON suppressions (at)"))
    conn.execute(sa.text("CREATE INDEX ix_bounce_mail_held ON bounce_mail (id) WHERE held IS NOT NULL"))


# Append (number, step) pairs; never edit a step once it has been released. Steps after the
# first are plain DDL: the Table objects of ``schema`` are what step 1 created.
MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [
    (1, _v1),
    (2, _v2),
    (3, _v3),
    (4, _v4),
    (6, _v6),
    (11, _v11),
    (16, _v16),
    (17, _v17),
    (18, _v18),
    (19, _v19),
    (22, _v22),
]
LATEST = MIGRATIONS[-1][0]


def current_version(engine: Engine) -> int:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("schema_version"):
            return 0
        return int(conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0)


def migrate(engine: Engine) -> list[int]:
    """Apply every missing migration, one transaction each; return the numbers applied.

    Several processes may open a fresh database at once (``run`` instances, ``worker``s): each
    step runs under a lock that lets one of them migrate while the others wait and then find
    nothing left to do.
    """
    applied: list[int] = []
    for number, step in MIGRATIONS:
        with _exclusive(engine) as conn:
            schema_version.create(conn, checkfirst=True)
            have = conn.execute(sa.select(schema_version.c.version).where(schema_version.c.version == number)).first()
            if have:
                continue
            step(conn)
            conn.execute(schema_version.insert().values(version=number, applied=datetime.now(UTC)))
            applied.append(number)
    return applied


@contextlib.contextmanager
def _exclusive(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the database's migration lock until it ends."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7270001)"))
            yield conn
        return
    # SQLite: Python's sqlite3 runs DDL outside any transaction unless one was begun by hand;
    # BEGIN IMMEDIATE takes the write lock up front, so a second process waits (busy timeout).
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
