"""Storage of the delivery ledger: one row per edition and reader, claimed under a lease, and
the pauses of an edition's sending."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from feedservice.adapters.store import schema as t
from feedservice.adapters.store._base import StoreBase, _iso_date, schema_utc
from feedservice.adapters.store.subscribers import SUBSCRIBER_COLUMNS, subscriber_from_row
from feedservice.model import Delivery, DeliveryStatus, Subscriber


def _delivery(r: Any) -> Delivery:
    return Delivery(
        id=r.id,
        edition=r.edition,
        subscriber_id=r.subscriber_id,
        email=r.email,
        status=DeliveryStatus(r.status),
        message_id=r.message_id,
        attempts=r.attempts,
        last_reply=r.last_reply,
        next_attempt=r.next_attempt,
    )


class LedgerStoreMixin(StoreBase):
    # -- deliveries --------------------------------------------------------------------------
    def enqueue_deliveries(self, day: date, rows: Sequence[tuple[int, str, str]], now: datetime) -> int:
        """Record (subscriber_id, email, message_id) as queued; existing rows stay as they are.

        Returns how many were new. Written with the driver's executemany: this runs once per
        subscriber per edition.
        """
        if not rows:
            return 0
        values = [
            {
                "edition": day,
                "subscriber_id": sid,
                "email": email,
                "message_id": mid,
                "status": DeliveryStatus.QUEUED.value,
                "attempts": 0,
                "updated": now,
            }
            for sid, email, mid in rows
        ]
        c = t.deliveries.c
        count = sa.select(sa.func.count()).select_from(t.deliveries).where(c.edition == day)
        with self._tx("queueing deliveries") as conn:
            before = int(conn.execute(count).scalar() or 0)
            self._bulk_insert(conn, t.deliveries, values, ignore_conflicts=True)
            return int(conn.execute(count).scalar() or 0) - before

    def claim_deliveries(
        self, day: date, now: datetime, limit: int, worker: str, lease: timedelta
    ) -> list[tuple[Delivery, Subscriber | None]]:
        """Claim up to ``limit`` deliveries that are due: queued, deferred and due, or claimed by
        another worker whose lease ran out (it died). Claimed rows become "sending" for this worker.
        Rows this worker holds are never claimed again, however long they wait in its queue: on a
        slow machine (or with a short lease) that would send them twice in one run.

        On PostgreSQL the rows are picked with FOR UPDATE SKIP LOCKED, so any number of workers on
        any number of machines claim disjoint rows; SQLite has one writer at a time anyway.

        Written as driver SQL (``_claim_sql``): this runs for every message sent, and building
        SQLAlchemy statements and processing their rows cost ~100 µs a message, more than the
        database's own work (docs/benchmarks.md, sending, 2026-11-30 fifth session).
        """
        to_db = self.to_db_time()
        edition = _iso_date(day) if self.engine.dialect.name == "sqlite" else day
        claim_now, states = to_db(now), self._claim_sql
        state_params = ((), (to_db(now),), (to_db(now - lease), worker))
        rows: list[Any] = []
        with self._tx("claiming deliveries") as conn:
            # One UPDATE per state (each an index range on (edition, status, id), lowest ids first),
            # rather than one OR that the planners answered by reading the whole edition.
            for sql, extra in zip(states, state_params, strict=True):
                if len(rows) >= limit:
                    break
                params = (claim_now, worker, edition, *extra, limit - len(rows))
                rows += conn.exec_driver_sql(sql, params).all()
            rows.sort(key=lambda r: r[0])
            subs: dict[int, Subscriber] = {}
            if rows:
                ids = sorted({r[1] for r in rows})
                marks = ", ".join([self._mark] * len(ids))
                sql = f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE id IN ({marks})"
                subs = {r[0]: subscriber_from_row(r) for r in conn.exec_driver_sql(sql, tuple(ids))}
        return [(self._delivery_row(r, day), subs.get(r[1])) for r in rows]

    @functools.cached_property
    def _claim_sql(self) -> tuple[str, str, str]:
        """The claim's UPDATE … RETURNING for each due state: queued; deferred and due; held by a
        worker whose lease has run out (never this worker's own: it still holds them).
        Parameters: claimed_at, worker, edition, [time, [worker,]] limit."""
        m = self._mark
        lock = " FOR UPDATE SKIP LOCKED" if self.engine.dialect.name == "postgresql" else ""
        states = (
            f"status = '{DeliveryStatus.QUEUED.value}'",
            f"status = '{DeliveryStatus.DEFERRED.value}' AND next_attempt <= {m}",
            f"status = '{DeliveryStatus.SENDING.value}' AND claimed_at <= {m} AND worker <> {m}",
        )
        return tuple(  # type: ignore[return-value]
            f"UPDATE deliveries SET status = '{DeliveryStatus.SENDING.value}', claimed_at = {m}, worker = {m} "
            f"WHERE id IN (SELECT id FROM deliveries WHERE edition = {m} AND {state} ORDER BY id LIMIT {m}{lock}) "
            f"RETURNING {', '.join(_DELIVERY_COLUMNS)}"
            for state in states
        )

    def _delivery_row(self, r: Any, day: date) -> Delivery:
        next_attempt = r[6]
        return Delivery(
            id=r[0],
            edition=day,
            subscriber_id=r[1],
            email=r[2],
            status=DeliveryStatus.SENDING,
            message_id=r[3],
            attempts=r[4],
            last_reply=r[5],
            next_attempt=None if next_attempt is None else schema_utc(next_attempt),
        )

    def release_deliveries(self, ids: Sequence[int], worker: str, now: datetime) -> None:
        """Hand claimed deliveries back (queued again) when a worker stops before sending them."""
        c = t.deliveries.c
        self._queue_again(ids, now, c.status == DeliveryStatus.SENDING.value, c.worker == worker)

    def requeue_deliveries(self, ids: Sequence[int], now: datetime) -> None:
        """Queue deliveries again, due now (readers held back from suppression when a run paused)."""
        c = t.deliveries.c
        self._queue_again(ids, now, c.status.in_([DeliveryStatus.DEFERRED.value, DeliveryStatus.SENDING.value]))

    def _queue_again(self, ids: Sequence[int], now: datetime, *where: Any) -> None:
        if not ids:
            return
        c = t.deliveries.c
        with self._tx("queueing deliveries again") as conn:
            conn.execute(
                t.deliveries.update()
                .where(c.id.in_(list(ids)), *where)
                .values(
                    status=DeliveryStatus.QUEUED.value, next_attempt=None, claimed_at=None, worker=None, updated=now
                )
            )

    # -- pauses: an edition that waits for an operator (`digest send` resumes it) -----------------
    def pause_sending(self, day: date, reason: str, now: datetime) -> None:
        with self._tx("pausing an edition") as conn:
            stmt = self._insert(t.send_pauses).values(edition=day, reason=reason, paused_at=now)
            conn.execute(
                stmt.on_conflict_do_update(index_elements=["edition"], set_={"reason": reason, "paused_at": now})
            )

    def resume_sending(self, day: date) -> bool:
        """Lift the pause of an edition and clear its count of held-back suppressions (the operator
        has looked); True if it was paused."""
        with self._tx("resuming an edition") as conn:
            conn.execute(t.held_suppressions.delete().where(t.held_suppressions.c.edition == day))
            return bool(conn.execute(t.send_pauses.delete().where(t.send_pauses.c.edition == day)).rowcount)

    # -- the suppression breaker's count, one per edition whatever the number of workers ----------
    def hold_suppression(self, day: date) -> int:
        """Count one more reader of the edition held back from suppression; return the edition's
        count, every worker's included (one atomic upsert: concurrent workers never lose a count)."""
        h = t.held_suppressions
        stmt = self._insert(h).values(edition=day, refused=1)
        stmt = stmt.on_conflict_do_update(index_elements=["edition"], set_={"refused": h.c.refused + 1})
        with self._tx("counting held-back suppressions") as conn:
            return int(conn.execute(stmt.returning(h.c.refused)).scalar_one())

    def held_suppressions(self, day: date) -> int:
        """How many readers the edition's runs have held back from suppression (since a resume)."""
        h = t.held_suppressions
        with self._tx("reading held-back suppressions") as conn:
            return int(conn.execute(sa.select(h.c.refused).where(h.c.edition == day)).scalar() or 0)

    def sending_paused(self, day: date) -> str | None:
        """Why the edition's sending is paused, or None."""
        with self._tx("reading pauses") as conn:
            return conn.execute(sa.select(t.send_pauses.c.reason).where(t.send_pauses.c.edition == day)).scalar()

    def next_reclaim(self, day: date, lease: timedelta) -> datetime | None:
        """When the earliest delivery another worker holds would become claimable again, if any."""
        c = t.deliveries.c
        q = sa.select(sa.func.min(c.claimed_at)).where(c.edition == day, c.status == DeliveryStatus.SENDING.value)
        with self._tx("reading deliveries") as conn:
            first = conn.execute(q).scalar()
        if first is None:
            return None
        return schema_utc(first) + lease

    def mark_deliveries(
        self, outcomes: Sequence[tuple[int, DeliveryStatus, str | None, datetime | None]], now: datetime
    ) -> None:
        """Record several outcomes (id, status, reply, next attempt) in one transaction."""
        if not outcomes:
            return
        to_db, m = self.to_db_time(), self._mark
        # Driver SQL, as for claiming: one statement for the batch, no per-row SQLAlchemy work.
        sql = (
            f"UPDATE deliveries SET status = {m}, last_reply = {m}, updated = {m}, next_attempt = {m}, "
            f"attempts = attempts + 1, claimed_at = NULL, worker = NULL WHERE id = {m}"
        )
        updated = to_db(now)
        params = [(st.value, reply, updated, None if nxt is None else to_db(nxt), i) for i, st, reply, nxt in outcomes]
        with self._tx("recording deliveries") as conn:
            conn.exec_driver_sql(sql, params)

    def editions_with_work(self, now: datetime) -> list[date]:
        """Editions with deliveries queued, being sent, or deferred and due: what a worker drains.

        A paused edition is left out: it waits for an operator's `digest send`.
        """
        c = t.deliveries.c
        paused = sa.select(t.send_pauses.c.edition)
        q = (
            sa.select(c.edition)
            .where(
                sa.or_(
                    c.status.in_([DeliveryStatus.QUEUED.value, DeliveryStatus.SENDING.value]),
                    sa.and_(c.status == DeliveryStatus.DEFERRED.value, c.next_attempt <= now),
                ),
                c.edition.not_in(paused),
            )
            .distinct()
            .order_by(c.edition)
        )
        with self._tx("reading deliveries") as conn:
            return list(conn.execute(q).scalars())

    def delivery_counts(self, day: date) -> dict[str, int]:
        c = t.deliveries.c
        q = sa.select(c.status, sa.func.count()).where(c.edition == day).group_by(c.status)
        with self._tx("counting deliveries") as conn:
            counts = {s.value: 0 for s in DeliveryStatus}
            counts.update({status: int(n) for status, n in conn.execute(q)})
            return counts

    def delivery_errors(self, day: date, limit: int = 10) -> list[Delivery]:
        c = t.deliveries.c
        q = (
            sa.select(t.deliveries)
            .where(c.edition == day, c.status.in_([DeliveryStatus.DEFERRED.value, DeliveryStatus.FAILED.value]))
            .order_by(c.updated.desc())
            .limit(limit)
        )
        with self._tx("reading deliveries") as conn:
            return [_delivery(r) for r in conn.execute(q)]


# What claiming reads, by position (``_delivery_row``).
_DELIVERY_COLUMNS = ("id", "subscriber_id", "email", "message_id", "attempts", "last_reply", "next_attempt")
