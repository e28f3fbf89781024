"""The messages of one sending run: each delivery's digest, personalised and, with DKIM, signed.

A signed message is asked for as its delivery is queued (``ask``), so the signature is made —
in the signing process (``ports.RunSigner``) — while the loop sends the messages before it, and
no sender waits for one (``take``). Whatever goes wrong while asking is left for the sender to
meet when it composes the message itself; a message not sent after all drops its signature."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

from feedservice.model import Delivery, Edition, Subscriber, SubscriberStatus
from feedservice.ports import RunSigner
from feedservice.services.digest import DigestSite, RenderedDigest, personal_parts, prepare

__all__ = ["Outgoing"]


class Outgoing:
    def __init__(
        self,
        site: DigestSite,
        edition: Edition,
        rendered_for: Callable[[tuple[str, ...]], RenderedDigest | None],
        links_for: Callable[[Subscriber], tuple[str, str]],
        clock: Callable[[], datetime],
        sign: RunSigner | None,
    ) -> None:
        self.site, self.edition, self.rendered_for, self.links_for = site, edition, rendered_for, links_for
        self.clock, self.sign = clock, sign
        self.asked: dict[int, asyncio.Future[bytes]] = {}  # signed messages asked for, by delivery id

    def ask(self, d: Delivery, sub: Subscriber | None) -> None:
        """Ask for a queued delivery's signed message now (nothing to ask without DKIM)."""
        if self.sign is None or sub is None or sub.status is not SubscriberStatus.SUBSCRIBED:
            return
        with contextlib.suppress(Exception):  # the sender meets it again, as that message's outcome
            if (parts := self.compose(d, sub)) is not None:
                self.asked[d.id] = self.sign.sign_parts(*parts)

    async def take(self, d: Delivery, sub: Subscriber) -> bytes | None:
        """The message for ``d`` (asked for, or composed and signed now); None: nothing to send."""
        if (asked := self.asked.pop(d.id, None)) is not None:
            return await asked
        if (parts := self.compose(d, sub)) is None:
            return None
        return parts[0] + b"".join(parts[1]) if self.sign is None else await self.sign.sign_parts(*parts)

    def drop(self, delivery_id: int) -> None:
        """``delivery_id``'s message is not sent after all (deferred, paused, the run stopping)."""
        if (asked := self.asked.pop(delivery_id, None)) is not None:
            asked.cancel()

    def close(self) -> None:
        """The run is over: what was asked for and not sent is dropped."""
        for asked in self.asked.values():
            asked.cancel()
        self.asked.clear()

    def compose(self, d: Delivery, sub: Subscriber) -> tuple[bytes, list[bytes]] | None:
        """The header and the body pieces of ``sub``'s digest, or None when their sections have nothing."""
        rendered = self.rendered_for(sub.sections)
        if rendered is None:
            return None
        unsubscribe, preferences = self.links_for(sub)
        return personal_parts(
            self.site,
            prepare(self.site, rendered, self.edition.day),
            to=sub.email,
            msg_id=d.message_id,
            unsubscribe_url=unsubscribe,
            preferences_url=preferences,
            now=self.clock(),
        )
