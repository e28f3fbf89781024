"""Subscriber administration: add, remove, and CSV import/export that round-trips losslessly."""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from email_validator import EmailNotValidError, validate_email

from feedservice.model import Subscriber, SubscriberStatus
from feedservice.ports import SignupStore, SubscriberStore
from feedservice.text import clean_text

CSV_FIELDS = ("email", "sections", "status", "created", "email_hash", "reason")
MAX_REASON_CHARS = 500  # a bounce's reason is a relay's reply line; an import's names its file


class InvalidAddress(ValueError):
    pass


def normalize_email(value: str) -> str:
    """A validated, normalised address (domain lower-cased, IDN to Unicode); no DNS look-up."""
    if any(c in value for c in "\r\n\x00") or len(value) > 254:
        raise InvalidAddress("not a single mail address")
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None


def parse_sections(value: str, known: Sequence[str]) -> tuple[str, ...]:
    """ "a,b" → ("a", "b"); empty means all sections. Unknown slugs are an error."""
    chosen = tuple(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise ValueError(f"unknown section(s): {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def export_csv(subscribers: Iterable[Subscriber], reasons: Mapping[int, str] | None = None) -> str:
    """Every subscriber as CSV; a suppressed one with why (``reasons``: by subscriber id), so that
    the suppression keeps its reason where the file is imported."""
    reasons = reasons or {}
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for s in subscribers:
        created = s.created.isoformat() if s.created else ""
        why = reasons.get(s.id, "") if s.status is SubscriberStatus.SUPPRESSED else ""
        # A forgotten address has only its hash: exported so that re-importing keeps suppressing it.
        w.writerow([s.email, ",".join(s.sections), s.status.value, created, "" if s.email else s.email_hash, why])
    return out.getvalue()


def _row_reason(row: Mapping[str, str | None], status: SubscriberStatus, default: str) -> str:
    """Why an imported row suppresses: its own ``reason`` (an export's, kept as it was, so the
    round trip is lossless), else ``default`` (the import's file and date)."""
    if status is not SubscriberStatus.SUPPRESSED:
        return default
    # Shown in a terminal table: no control or format characters (a bidi override could disguise it).
    given = "".join(ch for ch in clean_text(row.get("reason") or "") if unicodedata.category(ch) != "Cf")
    return given[:MAX_REASON_CHARS] or default


def import_csv(
    store: SubscriberStore,
    text: str,
    known_sections: Sequence[str],
    now: datetime | None = None,
    *,
    reason: str = "imported",
) -> ImportReport:
    """Idempotent: an identical row changes nothing; bad rows are reported by line and skipped.
    A row that suppresses an address records its ``reason`` column (an export's) or else ``reason``
    ("imported from FILE on DATE"), as a bounce's suppression records its own, so ``subscribers
    list`` says why.

    Text the csv module cannot read (a field over its 128 KB limit, a NUL-filled file) ends the
    import at that line with an error in the report: the rows before it are kept (importing the
    fixed file again changes nothing for them), and no csv.Error escapes as a traceback.
    """
    now = now or datetime.now(UTC)
    report = ImportReport()
    reader = csv.DictReader(io.StringIO(text))
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        report.errors.append((1, f"not CSV: {exc}"))
        return report
    if not header or "email" not in header:
        report.errors.append((1, "the header must name an 'email' column"))
        return report
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:
            # line_num counts the lines read before the one the reader gave up on
            report.errors.append((reader.line_num + 1, f"not CSV: {exc}; the rest of the file was not read"))
            break
        line = reader.line_num
        try:
            sections = parse_sections(row.get("sections") or "", known_sections)
            status = SubscriberStatus((row.get("status") or "subscribed").strip())
            since = datetime.fromisoformat(row["created"]) if (row.get("created") or "").strip() else None
            if since is not None and since.tzinfo is None:
                raise ValueError(f"created has no time zone: {row['created']!r}")
            if not (row.get("email") or "").strip() and (row.get("email_hash") or "").startswith("h1:"):
                if status not in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.SUPPRESSED):
                    raise ValueError("a row with only an address hash must be unsubscribed or suppressed")
                why = _row_reason(row, status, reason)
                if store.keep_forgotten(row["email_hash"], status, sections, since or now, now=now, reason=why):
                    report.added += 1
                else:
                    report.unchanged += 1
                continue
            email = normalize_email(row.get("email") or "")
        except (InvalidAddress, ValueError) as exc:
            report.errors.append((line, str(exc)))
            continue
        existing = store.get_subscriber(email)
        if existing and existing.status is status and existing.sections == sections:
            report.unchanged += 1
            continue
        why = _row_reason(row, status, reason)
        _, created = store.add_subscriber(email, sections, status, now, created=since, reason=why)
        if created:
            report.added += 1
        else:
            report.updated += 1
    return report


CONFIRM_EVERY = timedelta(hours=1)  # at most one confirmation mail per address per hour


@dataclass(frozen=True)
class SignupOutcome:
    """What a sign-up did. The page shows the same answer whatever this is (no enumeration)."""

    subscriber: Subscriber
    send_confirmation: bool


def request_signup(store: SignupStore, email: str, sections: Sequence[str], now: datetime) -> SignupOutcome:
    """A sign-up from the web form: double opt-in.

    A new or returning address (unsubscribed, suppressed) becomes ``unconfirmed`` and gets a
    confirmation mail; an unconfirmed one gets it again, but at most once an hour. A confirmed
    or paused subscriber is left as they are: a third party cannot change anyone's subscription
    by typing their address.
    """
    existing = store.get_subscriber(email)
    if existing is not None and existing.status in (SubscriberStatus.SUBSCRIBED, SubscriberStatus.PAUSED):
        return SignupOutcome(existing, send_confirmation=False)
    if existing is not None and existing.status is SubscriberStatus.UNCONFIRMED:
        recent = existing.confirm_sent is not None and now - existing.confirm_sent < CONFIRM_EVERY
        return SignupOutcome(existing, send_confirmation=not recent)
    if existing is not None and existing.confirm_sent is not None and now - existing.confirm_sent < CONFIRM_EVERY:
        return SignupOutcome(existing, send_confirmation=False)
    sub, _ = store.add_subscriber(email, sections, SubscriberStatus.UNCONFIRMED, now)
    return SignupOutcome(sub, send_confirmation=True)
