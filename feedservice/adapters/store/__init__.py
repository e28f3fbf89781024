"""The storage adapter: one ``Store`` over SQLAlchemy Core, for SQLite and PostgreSQL alike.

``open_store(url)`` connects and migrates; the store's methods come from one
mixin per domain (feeds, subscribers, editions, the delivery ledger, pacing, weather, jobs, bounces).
"""

from __future__ import annotations

from feedservice.adapters.store._base import make_engine, wrap_errors
from feedservice.adapters.store.bounces import BounceStoreMixin
from feedservice.adapters.store.editions import EditionStoreMixin
from feedservice.adapters.store.feeds import FeedStoreMixin
from feedservice.adapters.store.jobs import JobStoreMixin
from feedservice.adapters.store.ledger import LedgerStoreMixin
from feedservice.adapters.store.migrations import LATEST, current_version, migrate
from feedservice.adapters.store.pacing import PacingStoreMixin
from feedservice.adapters.store.subscribers import SubscriberStoreMixin
from feedservice.adapters.store.weather import WeatherStoreMixin

__all__ = ["Store", "open_store"]


class Store(
    FeedStoreMixin,
    SubscriberStoreMixin,
    EditionStoreMixin,
    LedgerStoreMixin,
    PacingStoreMixin,
    WeatherStoreMixin,
    JobStoreMixin,
    BounceStoreMixin,
):
    def __init__(self, url: str, *, address_key: bytes = b"") -> None:
        self.url = url
        self.engine = make_engine(url)
        self.address_key = address_key  # keys the hashes that forgotten addresses are kept as

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def schema_version(self) -> int:
        with wrap_errors("reading the schema version"):
            return current_version(self.engine)

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, *, address_key: bytes = b"") -> Store:
    """Connect to ``url`` and bring its schema up to date (``LATEST``)."""
    store = Store(url, address_key=address_key)
    with wrap_errors(f"migrating {store.engine.url.render_as_string(hide_password=True)}"):
        migrate(store.engine)
    assert store.schema_version() == LATEST
    return store
