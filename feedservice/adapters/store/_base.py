"""The engine, error wrapping and dialect helpers shared by the storage mixins."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

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
                cur.execute("PRAGMA journal_mode=WAL")
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

    def _insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ON CONFLICT for the engine's dialect."""
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)
