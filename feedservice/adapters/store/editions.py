"""Storage of digest editions: each day's window, subject, web copy and the articles it carried."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import sqlalchemy as sa

from feedservice.adapters.store import schema as t
from feedservice.adapters.store._base import StoreBase
from feedservice.model import Edition


class EditionStoreMixin(StoreBase):
    # -- editions ----------------------------------------------------------------------------
    def save_edition(
        self, edition: Edition, html: str, text: str, now: datetime, article_ids: Sequence[str] = ()
    ) -> bool:
        """Store an edition (and which articles it carried) once; False if it existed (kept as is)."""
        with self._tx("saving an edition") as conn:
            stmt = self._insert(t.editions).values(
                day=edition.day,
                window_start=edition.window_start,
                window_end=edition.window_end,
                subject=edition.subject,
                html=html,
                text=text,
                created=now,
            )
            # RETURNING, not rowcount: psycopg reports -1 for ON CONFLICT DO NOTHING.
            res = conn.execute(stmt.on_conflict_do_nothing(index_elements=["day"]).returning(t.editions.c.day))
            created = res.first() is not None
            if created and article_ids:
                conn.execute(
                    t.edition_articles.insert(),
                    [{"edition": edition.day, "article_id": a} for a in dict.fromkeys(article_ids)],
                )
            return created

    def articles_carried(self, since: date, before: date) -> set[str]:
        """Ids of the articles that editions from ``since`` up to (not including) ``before`` carried."""
        ea = t.edition_articles
        q = sa.select(ea.c.article_id).where(ea.c.edition >= since, ea.c.edition < before)
        with self._tx("reading edition articles") as conn:
            return set(conn.execute(q).scalars())

    def get_edition(self, day: date) -> tuple[Edition, str, str] | None:
        with self._tx("reading an edition") as conn:
            r = conn.execute(sa.select(t.editions).where(t.editions.c.day == day)).first()
        if r is None:
            return None
        ed = Edition(day=r.day, window_start=r.window_start, window_end=r.window_end, subject=r.subject)
        return ed, r.html, r.text

    def list_editions(self, limit: int = 60) -> list[Edition]:
        q = sa.select(t.editions).order_by(t.editions.c.day.desc()).limit(limit)
        with self._tx("listing editions") as conn:
            return [
                Edition(day=r.day, window_start=r.window_start, window_end=r.window_end, subject=r.subject)
                for r in conn.execute(q)
            ]

    def last_edition_before(self, day: date) -> Edition | None:
        q = sa.select(t.editions).where(t.editions.c.day < day).order_by(t.editions.c.day.desc()).limit(1)
        with self._tx("reading editions") as conn:
            r = conn.execute(q).first()
        if r is None:
            return None
        return Edition(day=r.day, window_start=r.window_start, window_end=r.window_end, subject=r.subject)
