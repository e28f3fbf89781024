"""Storage of subscribers: sign-up, confirmation, status and section choices, forgetting."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from feedservice.adapters.store import schema as t
from feedservice.adapters.store._base import StoreBase, schema_utc
from feedservice.model import Subscriber, SubscriberStatus
from feedservice.tokens import address_hash, address_key_fingerprint


def to_subscriber(r: Any) -> Subscriber:
    return Subscriber(
        id=r.id,
        email=r.email or "",
        status=SubscriberStatus(r.status),
        sections=tuple(r.sections or ()),
        created=r.created,
        email_hash=r.email_hash,
        confirm_nonce=r.confirm_nonce,
        confirm_sent=r.confirm_sent,
        token_version=r.token_version,
    )


# A subscriber as driver SQL reads it (``subscriber_from_row``): claiming deliveries and streaming the
# list for an edition run once per reader, where SQLAlchemy's row processing cost more than the query.
SUBSCRIBER_COLUMNS = "id, email, status, sections, created, email_hash, confirm_nonce, confirm_sent, token_version"


def subscriber_from_row(r: Any) -> Subscriber:
    """A row of ``SUBSCRIBER_COLUMNS`` as the driver gives it (JSON and times as text on SQLite)."""
    sections = r[3]
    if isinstance(sections, str):  # SQLite keeps JSON as text; psycopg reads it
        sections = json.loads(sections)
    return Subscriber(
        id=r[0],
        email=r[1] or "",
        status=SubscriberStatus(r[2]),
        sections=tuple(sections or ()),
        created=None if r[4] is None else schema_utc(r[4]),
        email_hash=r[5],
        confirm_nonce=r[6],
        confirm_sent=None if r[7] is None else schema_utc(r[7]),
        token_version=r[8],
    )


FORGOTTEN = (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.SUPPRESSED)
# The reason recorded for an address added as suppressed when the caller gives none.
ADDED_SUPPRESSED = "added as suppressed by an operator"


class SubscriberStoreMixin(StoreBase):
    # -- subscribers -------------------------------------------------------------------------
    # An unsubscribed or suppressed address is forgotten: only its keyed hash stays (subscribers
    # and the delivery ledger alike), enough to keep suppressing it and to know it on return.
    address_key: bytes = b""

    def address_hash(self, email: str) -> str:
        return address_hash(self.address_key, email)

    def check_address_key(self, now: datetime) -> bool:
        """True if the address key is the one this database's hashes were made with. A database
        with none recorded yet (a new one, or one from before migration 11) records it now; only
        its fingerprint is kept (``tokens.address_key_fingerprint``), never the key."""
        k = t.key_fingerprints
        mine = address_key_fingerprint(self.address_key)
        record = self._insert(k).values(purpose="address", fingerprint=mine, recorded=now)
        with self._tx("checking the address key") as conn:
            conn.execute(record.on_conflict_do_nothing(index_elements=["purpose"]))
            kept = conn.execute(sa.select(k.c.fingerprint).where(k.c.purpose == "address")).scalar_one()
        return hmac.compare_digest(kept, mine)

    def _forget(self, conn: Any, subscriber_id: int, email_hash: str) -> None:
        """Keep only the hash, and raise the token version: links mailed before stop working."""
        c = t.subscribers.c
        conn.execute(
            t.subscribers.update().where(c.id == subscriber_id).values(email=None, token_version=c.token_version + 1)
        )
        conn.execute(
            t.deliveries.update().where(t.deliveries.c.subscriber_id == subscriber_id).values(email=email_hash)
        )

    def add_subscriber(
        self,
        email: str,
        sections: Sequence[str],
        status: SubscriberStatus,
        now: datetime,
        created: datetime | None = None,
        *,
        reason: str = ADDED_SUPPRESSED,
    ) -> tuple[Subscriber, bool]:
        """Insert or update by address (found by its hash, also once forgotten); (subscriber, new?).
        One that becomes suppressed here has ``reason`` recorded, as a bounce's suppression has its own."""
        h = self.address_hash(email)
        c = t.subscribers.c
        with self._tx("saving a subscriber") as conn:
            row = conn.execute(sa.select(t.subscribers).where(c.email_hash == h)).first()
            newly_suppressed = status is SubscriberStatus.SUPPRESSED and (
                row is None or row.status != SubscriberStatus.SUPPRESSED.value
            )
            values: dict[str, Any] = {"status": status.value, "sections": list(sections)}
            if status is SubscriberStatus.SUBSCRIBED and (row is None or row.confirmed is None):
                values["confirmed"] = now
            is_new = row is None
            if row is None:
                conn.execute(t.subscribers.insert().values(email=email, email_hash=h, created=created or now, **values))
            else:
                conn.execute(t.subscribers.update().where(c.id == row.id).values(email=email, **values))
            row = conn.execute(sa.select(t.subscribers).where(c.email_hash == h)).one()
            if status in FORGOTTEN:
                self._forget(conn, row.id, h)
                row = conn.execute(sa.select(t.subscribers).where(c.email_hash == h)).one()
            if newly_suppressed:
                conn.execute(t.suppressions.insert().values(subscriber_id=row.id, at=now, reason=reason))
            return to_subscriber(row), is_new

    def keep_forgotten(
        self,
        email_hash: str,
        status: SubscriberStatus,
        sections: Sequence[str],
        created: datetime,
        *,
        now: datetime | None = None,
        reason: str = ADDED_SUPPRESSED,
    ) -> bool:
        """Record a forgotten address (hash only), e.g. from an export; False if it was known. A
        suppressed one has ``reason`` recorded at ``now`` (default: ``created``)."""
        with self._tx("saving a subscriber") as conn:
            stmt = self._insert(t.subscribers).values(
                email=None, email_hash=email_hash, status=status.value, sections=list(sections), created=created
            )
            res = conn.execute(stmt.on_conflict_do_nothing(index_elements=["email_hash"]).returning(t.subscribers.c.id))
            added = res.first()
            if added is not None and status is SubscriberStatus.SUPPRESSED:
                conn.execute(t.suppressions.insert().values(subscriber_id=added.id, at=now or created, reason=reason))
            return added is not None

    def get_subscriber(self, email: str) -> Subscriber | None:
        """By address; a forgotten one too (its address is then empty)."""
        with self._tx("reading a subscriber") as conn:
            q = sa.select(t.subscribers).where(t.subscribers.c.email_hash == self.address_hash(email))
            row = conn.execute(q).first()
            return to_subscriber(row) if row else None

    def get_subscriber_by_id(self, subscriber_id: int) -> Subscriber | None:
        with self._tx("reading a subscriber") as conn:
            row = conn.execute(sa.select(t.subscribers).where(t.subscribers.c.id == subscriber_id)).first()
            return to_subscriber(row) if row else None

    def set_subscriber_status(
        self, subscriber: int | str, status: SubscriberStatus, sections: Sequence[str] | None = None
    ) -> bool:
        """Change a subscriber's status (and sections), found by id or by address (through its
        keyed hash, so also once forgotten); unsubscribing or suppressing forgets the address.
        False if there is no such subscriber."""
        c = t.subscribers.c
        found = c.id == subscriber if isinstance(subscriber, int) else c.email_hash == self.address_hash(subscriber)
        values: dict[str, Any] = {"status": status.value}
        if sections is not None:
            values["sections"] = list(sections)
        with self._tx("updating a subscriber") as conn:
            row = conn.execute(sa.select(c.id, c.email_hash).where(found)).first()
            if row is None:
                return False
            conn.execute(t.subscribers.update().where(c.id == row.id).values(**values))
            if status in FORGOTTEN:
                self._forget(conn, row.id, row.email_hash)
            return True

    def start_confirmation(self, subscriber_id: int, nonce: str, now: datetime) -> None:
        with self._tx("recording a confirmation mail") as conn:
            conn.execute(
                t.subscribers.update()
                .where(t.subscribers.c.id == subscriber_id)
                .values(confirm_nonce=nonce, confirm_sent=now)
            )

    def consume_confirmation(self, subscriber_id: int, nonce: str, now: datetime) -> bool:
        """Confirm if ``nonce`` is the open one; it is cleared, so a link works once."""
        c = t.subscribers.c
        with self._tx("confirming a subscriber") as conn:
            res = conn.execute(
                t.subscribers.update()
                .where(c.id == subscriber_id, c.confirm_nonce == nonce, c.status == SubscriberStatus.UNCONFIRMED.value)
                .values(status=SubscriberStatus.SUBSCRIBED.value, confirm_nonce=None, confirmed=now)
            )
            return bool(res.rowcount)

    def iter_subscribers(self, status: SubscriberStatus | None = None, batch: int = 1000) -> Iterator[Subscriber]:
        """All subscribers by id, read in batches so memory stays flat."""
        m, last = self._mark, 0
        sql = f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE id > {m}"
        sql += f" AND status = {m}" if status is not None else ""
        sql += f" ORDER BY id LIMIT {m}"
        while True:
            params = (last, status.value, batch) if status is not None else (last, batch)
            with self._tx("listing subscribers") as conn:
                rows = conn.exec_driver_sql(sql, params).all()
            if not rows:
                return
            for r in rows:
                yield subscriber_from_row(r)
            last = rows[-1][0]
