"""Storage of returned mail (bounces, complaints, auto-replies, the unmatched) and suppressions.

A piece of mail is recorded once, by the SHA-256 of its bytes, so reading an intake twice (or a
crash between recording a message and moving it out of ``new/``) changes nothing. Recording a
message and the suppression it causes is one transaction: there is never a suppression without
its reason and message, nor a recorded bounce whose suppression was lost.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from feedservice.adapters.store import schema as t
from feedservice.adapters.store._base import StoreBase
from feedservice.bounce_model import BounceKind, BounceRecord, BounceRow, BreakerWindow, EditionFeedback
from feedservice.model import DeliveryStatus, SubscriberStatus

# A webhook token's binding outlives its freshness by this much before it is dropped: a call that
# found the token fresh at its last instant, in any worker, binds (or is refused) long before.
STALE_KEPT = timedelta(hours=1)

__all__ = ["STALE_KEPT", "BounceStoreMixin"]


def _record(r: Any) -> BounceRecord:
    return BounceRecord(
        id=r.id,
        received=r.received,
        source=r.source,
        kind=BounceKind(r.kind),
        edition=r.edition,
        subscriber_id=r.subscriber_id,
        recipient=r.recipient,
        status=r.status,
        detail=r.detail,
        action=r.action,
        subject=r.subject,
    )


class BounceStoreMixin(StoreBase):
    def _forget(self, conn: Any, subscriber_id: int, email_hash: str) -> None: ...  # the subscribers' mixin

    def bounce_known(self, digest: str) -> bool:
        with self._tx("looking up returned mail") as conn:
            c = t.bounce_mail.c
            return conn.execute(sa.select(c.id).where(c.digest == digest)).first() is not None

    def bounce_source_known(self, source: str) -> bool:
        """Whether something from ``source`` was recorded (a provider's event id: a replay)."""
        with self._tx("looking up returned mail") as conn:
            c = t.bounce_mail.c
            return conn.execute(sa.select(c.id).where(c.source == source).limit(1)).first() is not None

    def bind_webhook_token(self, token: str, digest: str, stale_at: datetime, now: datetime) -> bool:
        """Bind ``token`` to ``digest`` until ``stale_at`` unless it is bound already, in one
        transaction; whether it is bound to ``digest`` (False: it came before with another body).
        The primary key decides between processes binding the same token at once: one insert
        wins, the other finds its row. Bindings stale for ``STALE_KEPT`` at ``now`` are dropped on
        the way: dropped once stale, a binding was gone (a later call's drop, in any worker) when a
        replay found its token fresh at the last instant, and the replay bound its own body."""
        w = t.webhook_tokens.c
        with self._tx("binding a webhook token") as conn:
            conn.execute(t.webhook_tokens.delete().where(w.stale_at < now - STALE_KEPT))
            stmt = self._insert(t.webhook_tokens).values(token=token, digest=digest, stale_at=stale_at)
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["token"]))
            bound: str = conn.execute(sa.select(w.digest).where(w.token == token)).scalar_one()
        return hmac.compare_digest(bound, digest)

    def record_bounce(self, row: BounceRow) -> bool:
        """Record ``row`` (and its suppression); False when this message was recorded before."""
        c = t.bounce_mail.c
        with self._tx("recording returned mail") as conn:
            if conn.execute(sa.select(c.id).where(c.digest == row.digest)).first() is not None:
                return False
            values = {
                "digest": row.digest,
                "received": row.received,
                "source": row.source,
                "kind": row.kind.value,
                "edition": row.edition,
                "subscriber_id": row.subscriber_id,
                "matched_by": row.matched_by,
                "recipient": row.recipient,
                "status": row.status,
                "detail": row.detail,
                "subject": row.subject,
                "action": row.action,
                "raw": row.raw,
                "held": row.held,
            }
            bounce_id = conn.execute(t.bounce_mail.insert().values(**values).returning(c.id)).scalar_one()
            if row.suppress is not None and row.subscriber_id is not None:
                self._suppress(conn, row.subscriber_id, row.suppress, bounce_id, row.received)
            return True

    def _suppress(self, conn: Any, subscriber_id: int, reason: str, bounce_id: int, now: datetime) -> None:
        s = t.subscribers.c
        sub = conn.execute(sa.select(s.id, s.email_hash, s.status).where(s.id == subscriber_id)).first()
        if sub is None or sub.status == SubscriberStatus.SUPPRESSED.value:
            return
        suppressed = SubscriberStatus.SUPPRESSED.value
        conn.execute(t.subscribers.update().where(s.id == subscriber_id).values(status=suppressed))
        self._forget(conn, sub.id, sub.email_hash)
        conn.execute(
            t.suppressions.insert().values(subscriber_id=subscriber_id, at=now, reason=reason, bounce_id=bounce_id)
        )

    def delivery_by_message_id(self, message_ids: Sequence[str]) -> tuple[date, int] | None:
        """(edition, subscriber id) of the delivery that went out with one of these Message-IDs."""
        if not message_ids:
            return None
        d = t.deliveries.c
        with self._tx("looking up a delivery") as conn:
            row = conn.execute(
                sa.select(d.edition, d.subscriber_id).where(d.message_id.in_(list(message_ids))).limit(1)
            ).first()
        return (row.edition, row.subscriber_id) if row else None

    def soft_history(self, subscriber_id: int, since: datetime) -> tuple[list[date | None], list[date]]:
        """Since ``since``: the editions of this reader's soft bounces (None where unknown), and the
        editions sent to them that no bounce of any kind came back for (deliveries that worked)."""
        b, d = t.bounce_mail.c, t.deliveries.c
        with self._tx("reading a reader's bounces") as conn:
            soft = [
                r.edition
                for r in conn.execute(
                    sa.select(b.edition)
                    .where(b.subscriber_id == subscriber_id, b.kind == BounceKind.SOFT.value, b.received >= since)
                    .order_by(b.received)
                )
            ]
            bounced = sa.select(b.edition).where(
                b.subscriber_id == subscriber_id,
                b.edition.is_not(None),
                b.kind.in_([BounceKind.SOFT.value, BounceKind.HARD.value]),
            )
            clean = [
                r.edition
                for r in conn.execute(
                    sa.select(d.edition)
                    .where(
                        d.subscriber_id == subscriber_id,
                        d.status == DeliveryStatus.SENT.value,
                        d.updated >= since,
                        d.edition.not_in(bounced),
                    )
                    .order_by(d.edition)
                )
            ]
        return soft, clean

    # -- the bounce breaker's window: suppressions across runs and webhook calls -------------------
    def breaker_window(self, now: datetime, length: timedelta) -> BreakerWindow:
        """Suppressions that returned mail and webhooks made within ``length`` before ``now`` (or
        since the operator's last release, if later), and those the breaker holds."""
        s, b = t.suppressions.c, t.bounce_mail.c
        with self._tx("reading the bounce breaker") as conn:
            released = conn.execute(sa.select(sa.func.max(t.breaker_releases.c.released_at))).scalar()
            since = max(now - length, released) if released is not None else now - length
            made = conn.execute(sa.select(sa.func.count()).where(s.at > since, s.bounce_id.is_not(None))).scalar_one()
            held = conn.execute(sa.select(sa.func.count()).where(b.held.is_not(None))).scalar_one()
        return BreakerWindow(since, int(made), int(held))

    def release_held_bounces(self, now: datetime) -> int:
        """The operator's release: apply every suppression the breaker held, and start its window
        again at ``now`` (one transaction). The number of readers suppressed."""
        b = t.bounce_mail.c
        with self._tx("releasing the bounce breaker") as conn:
            rows = conn.execute(sa.select(b.id, b.subscriber_id, b.held).where(b.held.is_not(None))).all()
            for r in rows:
                if r.subscriber_id is not None:
                    self._suppress(conn, r.subscriber_id, r.held, r.id, now)
                conn.execute(
                    t.bounce_mail.update()
                    .where(b.id == r.id)
                    .values(held=None, action="suppressed (held by the breaker, released by an operator)")
                )
            conn.execute(t.breaker_releases.insert().values(released_at=now))
        return len(rows)

    def subscribed_count(self) -> int:
        s = t.subscribers.c
        with self._tx("counting subscribers") as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(s.status == SubscriberStatus.SUBSCRIBED.value)
                ).scalar_one()
            )

    def list_bounces(
        self, since: datetime | None = None, *, unmatched: bool = False, limit: int = 1000
    ) -> list[BounceRecord]:
        c = t.bounce_mail.c
        query = sa.select(*(col for col in t.bounce_mail.c if col.name != "raw")).order_by(c.received, c.id)
        if since is not None:
            query = query.where(c.received >= since)
        if unmatched:
            query = query.where(c.matched_by.is_(None), c.kind.not_in([BounceKind.AUTO_REPLY.value]))
        with self._tx("listing returned mail") as conn:
            return [_record(r) for r in conn.execute(query.limit(limit))]

    def bounce_raw(self, bounce_id: int) -> bytes | None:
        c = t.bounce_mail.c
        with self._tx("reading returned mail") as conn:
            row = conn.execute(sa.select(c.raw).where(c.id == bounce_id)).first()
        return bytes(row.raw) if row else None

    def suppression_reasons(self, subscriber_id: int) -> list[tuple[datetime, str, int | None]]:
        s = t.suppressions.c
        with self._tx("reading suppressions") as conn:
            return [
                (r.at, r.reason, r.bounce_id)
                for r in conn.execute(
                    sa.select(s.at, s.reason, s.bounce_id).where(s.subscriber_id == subscriber_id).order_by(s.id)
                )
            ]

    def last_suppression_reasons(self) -> dict[int, str]:
        """Why each suppressed reader was suppressed last (a bounce's reason, or an import's)."""
        s = t.suppressions.c
        with self._tx("reading suppressions") as conn:
            return dict(conn.execute(sa.select(s.subscriber_id, s.reason).order_by(s.id)).tuples().all())

    def edition_feedback(self, day: date) -> EditionFeedback:
        b, d, s = t.bounce_mail.c, t.deliveries.c, t.subscribers.c
        sent = DeliveryStatus.SENT.value
        with self._tx("counting an edition's feedback") as conn:
            delivered = conn.execute(sa.select(sa.func.count()).where(d.edition == day, d.status == sent)).scalar_one()
            by_kind = dict(
                conn.execute(
                    sa.select(b.kind, sa.func.count(sa.distinct(b.subscriber_id)))
                    .where(b.edition == day, b.subscriber_id.is_not(None))
                    .group_by(b.kind)
                )
                .tuples()
                .all()
            )
            refused = conn.execute(  # refused by the relay while sending (services.bounces.refusal_row)
                sa.select(sa.func.count(sa.distinct(b.subscriber_id))).where(b.edition == day, b.matched_by == "relay")
            ).scalar_one()
            after = t.deliveries.alias("after")  # a later edition sent to the same reader
            later = sa.select(after.c.id).where(
                after.c.subscriber_id == d.subscriber_id, after.c.edition > day, after.c.status == sent
            )
            unsubscribes = conn.execute(
                sa.select(sa.func.count())
                .select_from(t.deliveries.join(t.subscribers, s.id == d.subscriber_id))
                .where(
                    d.edition == day,
                    d.status == sent,
                    s.status == SubscriberStatus.UNSUBSCRIBED.value,
                    ~sa.exists(later),
                )
            ).scalar_one()
        return EditionFeedback(
            delivered=int(delivered),
            hard=int(by_kind.get(BounceKind.HARD.value, 0)),
            soft=int(by_kind.get(BounceKind.SOFT.value, 0)),
            complaints=int(by_kind.get(BounceKind.COMPLAINT.value, 0)),
            unsubscribes=int(unsubscribes),
            refused=int(refused),
        )
