"""The tables, shared by SQLite and PostgreSQL.

These ``Table`` objects are the newest schema; ``migrations`` holds the numbered steps that
bring an older database to it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

metadata = sa.MetaData()


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware datetimes stored as UTC (SQLite keeps no zone, so we put it back)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied", UTCDateTime, nullable=False),
)

sections = sa.Table(
    "sections",
    metadata,
    sa.Column("slug", sa.String(64), primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("position", sa.Integer, nullable=False, default=0),
)

sources = sa.Table(
    "sources",
    metadata,
    sa.Column("url", sa.Text, primary_key=True),
    sa.Column("section", sa.String(64), nullable=False),
    sa.Column("name", sa.Text),
    sa.Column("etag", sa.Text),
    sa.Column("last_modified", sa.Text),
    sa.Column("last_attempt", UTCDateTime),
    sa.Column("last_success", UTCDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("failures", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt", UTCDateTime),
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("fetch_url", sa.Text),  # where a 301/308 moved the source; `url` stays the configured one
)

articles = sa.Table(
    "articles",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("section", sa.String(64), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("summary_html", sa.Text, nullable=False, default=""),
    sa.Column("content_html", sa.Text, nullable=False, default=""),
    sa.Column("author", sa.Text, nullable=False, default=""),
    sa.Column("categories", sa.JSON, nullable=False, default=list),
    sa.Column("image_url", sa.Text),
    sa.Column("image_type", sa.Text),
    sa.Column("image_length", sa.BigInteger),
    sa.Column("published", UTCDateTime),
    sa.Column("updated", UTCDateTime),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("source_url", sa.Text, nullable=False, default=""),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Index("ix_articles_section_published", "section", "published"),
    sa.Index("ix_articles_url", "url"),
    sa.Index("ix_articles_section_first_seen", "section", "first_seen"),
)

subscribers = sa.Table(
    "subscribers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.Text, unique=True),  # NULL once unsubscribed or suppressed: only the hash stays
    sa.Column("email_hash", sa.Text, nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("sections", sa.JSON, nullable=False, default=list),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("confirmed", UTCDateTime),
    sa.Column("confirm_nonce", sa.Text),  # the open confirmation, single use
    sa.Column("confirm_sent", UTCDateTime),
    # Raised each time the reader leaves: preferences links signed with an older version stop
    # working (migration 4 adds it to databases made before).
    sa.Column("token_version", sa.Integer, nullable=False, server_default="0"),
)

weather_observations = sa.Table(
    "weather_observations",
    metadata,
    sa.Column("station_id", sa.Integer, primary_key=True),
    sa.Column("observed_at", UTCDateTime, primary_key=True),
    sa.Column("station_name", sa.Text, nullable=False),
    sa.Column("temperature", sa.Float),
    sa.Column("condition", sa.Text),
    sa.Column("humidity", sa.Float),
    sa.Column("cloud_tenths", sa.Integer),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("fetched_at", UTCDateTime, nullable=False),
)

editions = sa.Table(
    "editions",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("window_start", UTCDateTime, nullable=False),
    sa.Column("window_end", UTCDateTime, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("html", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created", UTCDateTime, nullable=False),
)

edition_articles = sa.Table(
    "edition_articles",
    metadata,
    sa.Column("edition", sa.Date, sa.ForeignKey("editions.day"), primary_key=True),
    sa.Column("article_id", sa.Text, primary_key=True),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("edition", sa.Date, sa.ForeignKey("editions.day"), nullable=False),
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("message_id", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_reply", sa.Text),
    sa.Column("next_attempt", UTCDateTime),
    sa.Column("updated", UTCDateTime, nullable=False),
    sa.Column("claimed_at", UTCDateTime),  # while status is "sending": when, and by which worker
    sa.Column("worker", sa.Text),
    sa.UniqueConstraint("edition", "subscriber_id", name="uq_deliveries_edition_subscriber"),
    sa.Index("ix_deliveries_edition_status", "edition", "status"),  # migration 2 replaces it: ix_deliveries_claim
)

job_runs = sa.Table(
    "job_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(32), nullable=False),
    sa.Column("started", UTCDateTime, nullable=False),
    sa.Column("finished", UTCDateTime),
    sa.Column("status", sa.String(16), nullable=False),  # running, ok, failed, skipped
    sa.Column("detail", sa.Text),
    sa.Index("ix_job_runs_job_started", "job", "started"),
)

# Migration 3: an edition whose sending an operator must resume (the relay refused our sender,
# or one run would have suppressed a suspicious share of the list). One row per paused edition.
send_pauses = sa.Table(
    "send_pauses",
    metadata,
    sa.Column("edition", sa.Date, sa.ForeignKey("editions.day"), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("paused_at", UTCDateTime, nullable=False),
)

# Migration 11: the readers an edition's runs held back from suppression (refused as unknown),
# counted per edition rather than per worker, so the suppression breaker trips at the same total
# however many workers send the edition. Cleared when an operator resumes the edition.
held_suppressions = sa.Table(
    "held_suppressions",
    metadata,
    sa.Column("edition", sa.Date, sa.ForeignKey("editions.day"), primary_key=True),
    sa.Column("refused", sa.Integer, nullable=False),
)

# Migration 11 too: the fingerprint of the key that addresses are hashed with (``tokens.
# address_key_fingerprint``), so that opening the database with another key is refused instead
# of silently forgetting the list. One row per purpose ("address").
key_fingerprints = sa.Table(
    "key_fingerprints",
    metadata,
    sa.Column("purpose", sa.String(32), primary_key=True),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("recorded", UTCDateTime, nullable=False),
)

# Migration 16: mailbox providers that throttled us (a 421, 4.7.x or "too many" reply), so a
# pause outlives the process that saw it. One row per lane (a domain or a configured group).
domain_pauses = sa.Table(
    "domain_pauses",
    metadata,
    sa.Column("lane", sa.Text, primary_key=True),
    sa.Column("until", UTCDateTime, nullable=False),
    sa.Column("strikes", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

# Migration 17 (issue 16): every piece of mail that came back to the bounce address, matched or
# not, kept raw (never deleted: B5 of the fixtures README), and each suppression it caused.
bounce_mail = sa.Table(
    "bounce_mail",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),  # SHA-256 of the raw bytes: read once
    sa.Column("received", UTCDateTime, nullable=False),
    sa.Column("source", sa.Text, nullable=False),  # the intake and where in it ("maildir:new/…"); index: 18
    sa.Column("kind", sa.String(16), nullable=False),  # bounce_model.BounceKind
    sa.Column("edition", sa.Date),  # the delivery it is about, when matched
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id")),
    sa.Column("matched_by", sa.String(16)),  # verp, message-id, recipient; NULL: unmatched
    sa.Column("recipient", sa.Text),
    sa.Column("status", sa.String(16)),  # RFC 3463 code
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),  # what it did: "suppressed: …", "soft 1 of 3", "none"
    sa.Column("raw", sa.LargeBinary, nullable=False),
    # Migration 22: the suppression the breaker held (its reason) until an operator releases it
    # (``bounces check --force``); NULL when nothing waits.
    sa.Column("held", sa.Text),
    sa.Index("ix_bounce_mail_subscriber", "subscriber_id", "received"),
    sa.Index("ix_bounce_mail_received", "received"),
)

# Migration 22: when an operator released the bounce breaker (``bounces check --force``): its window restarts.
breaker_releases = sa.Table(
    "breaker_releases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("released_at", UTCDateTime, nullable=False),
)

# Migration 19: the token of each signed webhook call whose signature leaves the body out
# (Mailgun's: timestamp and token only), bound to a digest of that body for as long as the call
# is fresh. A captured call replayed with another body is refused by every process that shares
# the database, not only by the one that saw the call. Rows go an hour after they are stale
# (``bounces.STALE_KEPT``: a call found fresh at its last instant must still meet its token's row).
webhook_tokens = sa.Table(
    "webhook_tokens",
    metadata,
    sa.Column("token", sa.Text, primary_key=True),  # the provider and its token: "mailgun/<token>"
    sa.Column("digest", sa.String(64), nullable=False),  # SHA-256 of what the call said
    sa.Column("stale_at", UTCDateTime, nullable=False),  # after it, a new event under it is refused anyway
    sa.Index("ix_webhook_tokens_stale_at", "stale_at"),
)

suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subscriber_id", sa.Integer, sa.ForeignKey("subscribers.id"), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("bounce_id", sa.Integer, sa.ForeignKey("bounce_mail.id")),  # the message that caused it
    sa.Index("ix_suppressions_subscriber", "subscriber_id"),
)
