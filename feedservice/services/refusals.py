"""Readers a relay refused as unknown while sending (5.1.x), settled at the end of a run.

A run does not suppress them as the refusals come: it holds them back (deferred) and counts them
per edition, because a mass refusal is more likely the relay's fault than the list's (the
suppression breaker, ``replies.SuppressionBreaker``). Once the run is over, ``settle_refusals``
either suppresses them, each with its reason (``bounces.refusal_row``), or, when the breaker
tripped or the run was cut short, queues them again for when the edition resumes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import date, datetime

from feedservice.model import Delivery, DeliveryStatus
from feedservice.ports import DeliveryStore
from feedservice.services.bounces import refusal_row
from feedservice.services.replies import SuppressionBreaker

__all__ = ["settle_refusals"]


async def settle_refusals(
    store: DeliveryStore,
    day: date,
    refused: Sequence[tuple[Delivery, str]],
    breaker: SuppressionBreaker,
    clock: Callable[[], datetime],
    *,
    apply: bool,
) -> bool:
    """Suppress the ``refused`` deliveries of edition ``day`` (with the relay's reply), unless
    ``apply`` is false or the edition's breaker has tripped (in this run or another worker's):
    then queue them again. True when they were suppressed. A storage error is raised; the
    deliveries then stay deferred, retried later: nothing is lost."""
    # Another worker's refusals count too: it may have tripped the edition's breaker since.
    apply = apply and not breaker.observe(await asyncio.to_thread(store.held_suppressions, day))
    if not apply:
        await asyncio.to_thread(store.requeue_deliveries, [d.id for d, _ in refused], clock())
        return False
    for d, reply in refused:  # bad mailbox or domain: never again, with its reason (services.bounces)
        await asyncio.to_thread(store.record_bounce, refusal_row(d, reply, clock()))
    outcomes = [(d.id, DeliveryStatus.FAILED, reply, None) for d, reply in refused]
    await asyncio.to_thread(store.mark_deliveries, outcomes, clock())
    return True
