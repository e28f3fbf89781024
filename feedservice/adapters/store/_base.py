"""The engine, error wrapping and dialect helpers shared by the storage mixins."""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from feedservice.adapters.store.schema import UTCDateTime
from feedservice.errors import StorageError


def make_engine(url: str) -> Engine:
    """An engine for ``sqlite:///path`` (WAL, created folders) or ``postgresql://…`` (psycopg 3)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    try:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 30})

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                # Articles are a few KB each (Korean HTML): with 16 KB pages several share a page
                # instead of one per 4 KB page, and storing a collect writes about a fifth less.
                # Only a new, empty database takes it; an existing one keeps its page size.
                cur.execute("PRAGMA page_size=16384")
                _set_wal(cur)
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise StorageError(f"cannot open database {url!r}: {exc}") from exc
    return engine


@contextlib.contextmanager
def wrap_errors(what: str) -> Iterator[None]:
    """Turn SQLAlchemy/driver errors into ``StorageError`` naming what we were doing."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        raise StorageError(f"{what}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}") from exc


class StoreBase:
    engine: Engine

    @contextlib.contextmanager
    def _tx(self, what: str) -> Iterator[Connection]:
        with wrap_errors(what), self.engine.begin() as conn:
            yield conn

    def _bulk_insert(
        self, conn: Connection, table: sa.Table, rows: list[dict[str, Any]], *, ignore_conflicts: bool = False
    ) -> None:
        """INSERT many rows with the driver's executemany, skipping SQLAlchemy's per-row work.

        The collector stores thousands of articles a second; the Core insert spent more time
        preparing parameters than SQLite spent writing them. Values are converted here as the
        column types would: aware datetimes to UTC (naive text on SQLite), JSON to text.
        """
        if not rows:
            return
        names = list(rows[0])
        sqlite = self.engine.dialect.name == "sqlite"
        converters: list[Any] = []
        for name in names:
            col_type = table.c[name].type
            if isinstance(col_type, UTCDateTime):
                converters.append(functools.lru_cache(maxsize=256)(self.to_db_time()))  # few distinct times
            elif isinstance(col_type, sa.JSON):
                converters.append(_json)
            elif isinstance(col_type, sa.Date) and sqlite:
                converters.append(_iso_date)
            else:
                converters.append(None)
        params = [
            tuple(v if (f is None or v is None) else f(v) for f, v in zip(converters, row.values(), strict=True))
            for row in rows
        ]
        self._insert_tuples(conn, table, names, params, ignore_conflicts=ignore_conflicts)

    @functools.cached_property
    def _mark(self) -> str:
        """The driver's parameter placeholder, for SQL written out here (sqlite3: qmark, psycopg: format)."""
        return "?" if self.engine.dialect.name == "sqlite" else "%s"

    def _insert_tuples(
        self,
        conn: Connection,
        table: sa.Table,
        names: Sequence[str],
        params: list[tuple[Any, ...]],
        *,
        ignore_conflicts: bool = False,
    ) -> None:
        """INSERT rows given as tuples already in the driver's form (see ``to_db_time``)."""
        if not params:
            return
        sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join([self._mark] * len(names))})"
        if ignore_conflicts:
            sql += " ON CONFLICT DO NOTHING"
        conn.exec_driver_sql(sql, params)

    def to_db_time(self) -> Callable[[datetime], Any]:
        """How an aware datetime goes to the driver: naive UTC text on SQLite, aware UTC elsewhere."""
        return _sqlite_time if self.engine.dialect.name == "sqlite" else _utc

    def _insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ON CONFLICT for the engine's dialect."""
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)


def _set_wal(cur: Any) -> None:
    """Switch to WAL (kept in the file: a no-op once done). Switching takes a lock that SQLite
    does not wait for, so processes opening a new database together retry here."""
    deadline = time.monotonic() + 30
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _sqlite_time(value: datetime) -> str:
    # The text form SQLAlchemy's SQLite DateTime type writes and reads: "YYYY-MM-DD HH:MM:SS.ffffff".
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _json(value: Any) -> str:
    return json.dumps(value)


def _iso_date(value: Any) -> str:
    return str(value.isoformat())


def schema_utc(value: datetime) -> datetime:
    """A time read without the column type's processing (an aggregate such as MIN, or driver SQL),
    made aware UTC."""
    if isinstance(value, str):  # SQLite returns the stored text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
