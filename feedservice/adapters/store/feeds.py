"""Storage of sections, sources (with their fetch state) and articles."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from feedservice.adapters.store import schema as t
from feedservice.adapters.store._base import StoreBase
from feedservice.model import Article, FetchRecord, Section, SourceState


def _article(row: Any) -> Article:
    return Article(
        id=row.id,
        url=row.url,
        section=row.section,
        title=row.title,
        summary_html=row.summary_html,
        content_html=row.content_html,
        author=row.author,
        categories=tuple(row.categories or ()),
        image_url=row.image_url,
        image_type=row.image_type,
        image_length=row.image_length,
        published=row.published,
        updated=row.updated,
        source_url=row.source_url,
    )


class FeedStoreMixin(StoreBase):
    def sync_sections(self, sections: Sequence[Section]) -> None:
        """Make the stored sections match the configured ones (articles of dropped sections stay)."""
        # Upserts, not delete-then-insert: processes started together (several `run`s, `worker`s)
        # all sync at once, and on PostgreSQL a second delete sees nothing to delete and its
        # insert then collides with the first one's rows.
        with self._tx("saving sections") as conn:
            conn.execute(t.sections.delete().where(t.sections.c.slug.not_in([s.slug for s in sections])))
            for i, s in enumerate(sections):
                stmt = self._insert(t.sections).values(slug=s.slug, title=s.title, position=i)
                conn.execute(
                    stmt.on_conflict_do_update(index_elements=["slug"], set_={"title": s.title, "position": i})
                )

    def sync_sources(self, configured: Iterable[tuple[str, str, str | None]]) -> None:
        """Make the sources match the config: add new ones, update section/name, keep fetch state,
        drop the ones no longer configured (their articles stay)."""
        configured = list(configured)
        with self._tx("saving sources") as conn:
            conn.execute(t.sources.delete().where(t.sources.c.url.not_in([u for u, _, _ in configured])))
            for url, section, name in configured:
                stmt = self._insert(t.sources).values(url=url, section=section, name=name, failures=0, enabled=True)
                conn.execute(
                    stmt.on_conflict_do_update(index_elements=["url"], set_={"section": section, "name": name})
                )

    def list_sources(self, *, with_counts: bool = True) -> list[SourceState]:
        """Every source with its fetch state; ``with_counts`` adds its article count, which reads the
        whole articles table (for `feedservice sources`, not for each collect or health check)."""
        if with_counts:
            counts = (
                sa.select(t.articles.c.source_url, sa.func.count().label("n"))
                .group_by(t.articles.c.source_url)
                .subquery()
            )
            q = (
                sa.select(t.sources, sa.func.coalesce(counts.c.n, 0).label("n"))
                .select_from(t.sources.outerjoin(counts, counts.c.source_url == t.sources.c.url))
                .order_by(t.sources.c.section, t.sources.c.url)
            )
        else:
            q = sa.select(t.sources, sa.literal(0).label("n")).order_by(t.sources.c.section, t.sources.c.url)
        with self._tx("listing sources") as conn:
            return [
                SourceState(
                    url=r.url,
                    section=r.section,
                    name=r.name,
                    etag=r.etag,
                    last_modified=r.last_modified,
                    last_attempt=r.last_attempt,
                    last_success=r.last_success,
                    last_error=r.last_error,
                    failures=r.failures,
                    next_attempt=r.next_attempt,
                    articles=r.n,
                    enabled=r.enabled,
                    fetch_url=r.fetch_url,
                )
                for r in conn.execute(q)
            ]

    def record_fetch_failure(self, url: str, error: str, now: datetime, next_attempt: datetime) -> None:
        with self._tx("recording a fetch failure") as conn:
            conn.execute(
                t.sources.update()
                .where(t.sources.c.url == url)
                .values(
                    last_attempt=now,
                    last_error=error,
                    failures=t.sources.c.failures + 1,
                    next_attempt=next_attempt,
                )
            )

    def disable_source(self, url: str, error: str, now: datetime) -> None:
        with self._tx("disabling a source") as conn:
            conn.execute(
                t.sources.update()
                .where(t.sources.c.url == url)
                .values(enabled=False, last_attempt=now, last_error=error, failures=t.sources.c.failures + 1)
            )

    def record_fetch_success(
        self,
        url: str,
        now: datetime,
        next_attempt: datetime,
        *,
        etag: str | None,
        last_modified: str | None,
        articles: Sequence[Article] | None = (),
        fetch_url: str | None = None,
    ) -> tuple[int, int]:
        """One source's fetch; see ``record_fetches``."""
        arts = None if articles is None else tuple(articles)
        [(new, updated, _)] = self.record_fetches(
            [FetchRecord(url, next_attempt, etag, last_modified, arts, fetch_url)], now
        )
        return new, updated

    def record_fetches(self, records: Sequence[FetchRecord], now: datetime) -> list[tuple[int, int, int]]:
        """Store several sources' articles and fetch state in one transaction (none is half-stored).

        Returns (new, updated, foreign) article counts per record. An unchanged article is not
        rewritten; a changed one is updated in place with ``updated`` moved to ``now``, but only by
        the source it was first collected from; an article already stored (same id, or same link)
        is never stored twice. ``foreign`` counts the record's entries that another source owns
        (neither stored again nor allowed to change that source's article), for the caller to log.
        """
        counts: list[tuple[int, int, int]] = []
        to_db = self.to_db_time()
        now_db = to_db(now)
        with self._tx("storing fetched sources") as conn:
            known = self._known_articles(conn, [a for r in records for a in (r.articles or ())])
            inserts: list[tuple[Any, ...]] = []
            for record in records:
                new = changed = foreign = 0
                for a in record.articles or ():
                    by_link = _dedupable(a.url)
                    have = known.get(a.id) or (known.get("url:" + a.url) if by_link else None)
                    h = a.content_hash()  # worked out in the parser processes; the id is not in it
                    if have is None:
                        inserts.append(_insert_params(a, h, now_db, to_db))
                        known[a.id] = (a.id, h, record.url)
                        if by_link:
                            known["url:" + a.url] = known[a.id]
                        new += 1
                        continue
                    stored_id, stored_hash, owner = have
                    if owner != record.url:
                        foreign += 1  # owned by the source it was first collected from
                        continue
                    if stored_hash == h:
                        continue  # unchanged
                    if stored_id != a.id:
                        a = replace(a, id=stored_id)  # the same article, found by its link
                    row = _row(replace(a, updated=now), h, now)
                    del row["first_seen"]
                    if a.published is None:
                        del row["published"]  # keep the first-seen time it was given
                    conn.execute(t.articles.update().where(t.articles.c.id == stored_id).values(**row))
                    known[stored_id] = (stored_id, row["content_hash"], owner)
                    changed += 1
                counts.append((new, changed, foreign))
            self._insert_tuples(conn, t.articles, ARTICLE_COLUMNS, inserts)
            src = t.sources.c
            conn.execute(
                t.sources.update()
                .where(src.url == sa.bindparam("b_url"))
                .values(
                    etag=sa.bindparam("b_etag"),
                    last_modified=sa.bindparam("b_modified"),
                    last_attempt=now,
                    last_success=now,
                    last_error=None,
                    failures=0,
                    next_attempt=sa.bindparam("b_next", type_=t.UTCDateTime),
                    fetch_url=sa.func.coalesce(sa.bindparam("b_fetch", type_=sa.Text), src.fetch_url),
                ),
                [
                    {
                        "b_url": r.url,
                        "b_etag": r.etag,
                        "b_modified": r.last_modified,
                        "b_next": r.next_attempt,
                        "b_fetch": r.fetch_url,
                    }
                    for r in records
                ],
            )
        return counts

    def _known_articles(self, conn: Any, articles: Sequence[Article]) -> dict[str, tuple[str, str, str]]:
        """Stored (id, content hash, source) by id, and by "url:<url>" for articles matched by link."""
        known: dict[str, tuple[str, str, str]] = {}
        ids = [a.id for a in articles]
        urls = [a.url for a in articles if _dedupable(a.url)]
        for column, values in (("id", ids), ("url", urls)):
            for start in range(0, len(values), 500):
                chunk = tuple(values[start : start + 500])
                # Driver SQL: SQLAlchemy's expanding IN rendered 500 parameters per query, which
                # cost more than the index lookups themselves.
                sql = (
                    f"SELECT id, url, content_hash, source_url FROM {t.articles.name} "
                    f"WHERE {column} IN ({', '.join([self._mark] * len(chunk))})"
                )
                for r in conn.exec_driver_sql(sql, chunk):
                    known[r.id] = known["url:" + r.url] = (r.id, r.content_hash, r.source_url)
        return known

    def recent_articles(self, section: str | None, limit: int) -> list[Article]:
        """The newest articles of a section (or of all sections), newest first."""
        q = sa.select(t.articles)
        if section is not None:
            q = q.where(t.articles.c.section == section)
        q = q.order_by(t.articles.c.published.desc(), t.articles.c.id).limit(limit)
        with self._tx("reading articles") as conn:
            return [_article(r) for r in conn.execute(q)]

    def archive_articles(
        self, section: str | None, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[Article], tuple[datetime, str] | None]:
        """Up to ``limit`` articles after the key ``after`` in the order they were first stored
        (stable: later ones only ever come after), and the key (first_seen, id) of the last one.

        A keyset walk: migration 6's indexes on (section, first_seen, id) and (first_seen, id)
        give each page in order, however deep in the archive it is."""
        c = t.articles.c
        q = sa.select(t.articles)
        if section is not None:
            q = q.where(c.section == section)
        if after is not None:
            seen = sa.literal(after[0], t.UTCDateTime)
            # (first_seen, id) > after, written so that both databases range-scan the index.
            q = q.where(c.first_seen >= seen, sa.or_(c.first_seen > seen, c.id > after[1]))
        q = q.order_by(c.first_seen, c.id).limit(limit)
        with self._tx("reading archived articles") as conn:
            rows = list(conn.execute(q))
        if not rows:
            return [], after
        return [_article(r) for r in rows], (rows[-1].first_seen, rows[-1].id)

    def articles_for_edition(self, after: datetime, until: datetime, published_since: datetime) -> list[Article]:
        """Articles first collected in (after, until] and published at ``published_since`` or later,
        newest first: an edition's candidates (the rule is ``services.digest.edition_for``'s)."""
        c = t.articles.c
        q = (
            sa.select(t.articles)
            .where(c.first_seen > after, c.first_seen <= until, c.published >= published_since)
            .order_by(c.published.desc(), c.id)
        )
        with self._tx("reading articles") as conn:
            return [_article(r) for r in conn.execute(q)]

    def count_articles(self) -> int:
        with self._tx("counting articles") as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t.articles)).scalar() or 0)


def _dedupable(url: str) -> bool:
    """Whether a link identifies one article (a site's home page, as some feeds give, does not)."""
    if not url:
        return False
    sep = url.find("://")
    rest = url[sep + 3 :] if sep >= 0 else url
    slash = rest.find("/")
    return slash >= 0 and bool(rest[slash:].strip("/"))


ARTICLE_COLUMNS = (
    "id",
    "url",
    "section",
    "title",
    "summary_html",
    "content_html",
    "author",
    "categories",
    "image_url",
    "image_type",
    "image_length",
    "published",
    "updated",
    "first_seen",
    "source_url",
    "content_hash",
)


@functools.lru_cache(maxsize=1024)
def _categories_json(categories: tuple[str, ...]) -> str:
    """The categories column's JSON; a feed's few categories recur in most of its entries."""
    return json.dumps(list(categories))


def _insert_params(a: Article, content_hash: str, now_db: Any, to_db: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """An article's new row as the driver takes it, in ARTICLE_COLUMNS order (the collector stores
    thousands a second: one tuple built here instead of a dict converted column by column)."""
    return (
        a.id,
        a.url,
        a.section,
        a.title,
        a.summary_html,
        a.content_html,
        a.author,
        _categories_json(a.categories),
        a.image_url,
        a.image_type,
        a.image_length,
        to_db(a.published) if a.published else now_db,
        to_db(a.updated) if a.updated else None,
        now_db,
        a.source_url,
        content_hash,
    )


def _row(a: Article, content_hash: str, now: datetime) -> dict[str, Any]:
    return {
        "id": a.id,
        "url": a.url,
        "section": a.section,
        "title": a.title,
        "summary_html": a.summary_html,
        "content_html": a.content_html,
        "author": a.author,
        "categories": list(a.categories),
        "image_url": a.image_url,
        "image_type": a.image_type,
        "image_length": a.image_length,
        "published": a.published or now,
        "updated": a.updated,
        "first_seen": now,
        "source_url": a.source_url,
        "content_hash": content_hash,
    }
