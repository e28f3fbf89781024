"""Is this deployment ready to serve: the one rule behind ``/readyz`` and ``feedservice status``."""

from __future__ import annotations

from datetime import datetime, timedelta

from feedservice.ports import HealthStore

__all__ = ["readiness"]


def readiness(store: HealthStore, *, has_sources: bool, max_age: timedelta, now: datetime) -> tuple[bool, str]:
    """Ready, and why: the database answers and the last successful collect is at most ``max_age``
    old (any age when no source is configured)."""
    if not store.ping():
        return False, "the database does not answer"
    if not has_sources:
        return True, "ready (no sources configured)"
    last = max((s.last_success for s in store.list_sources(with_counts=False) if s.last_success), default=None)
    if last is None:
        return False, "no source has been collected yet"
    age = now - last
    if age > max_age:
        return False, f"the last successful collect was {int(age.total_seconds() // 60)} minutes ago"
    return True, "ready"
