"""WebSub publisher: tell the hub that feeds changed, so subscribers get them pushed.

A ping is ``POST hub`` with ``hub.mode=publish`` and one ``hub.url`` per changed feed (the
form most hubs accept). A failing hub is logged and otherwise ignored: readers still poll.
The hub is the operator's configured URL: see ``apiclient`` for why no SSRF guard applies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import urlencode

from feedservice.adapters.apiclient import FAILURES, open_session, request

log = logging.getLogger(__name__)


class WebSubPublisher:
    def __init__(self, hub: str, *, timeout: float = 10.0) -> None:
        self.hub = hub
        self.timeout = timeout

    async def publish(self, urls: Sequence[str]) -> bool:
        if not urls:
            return True
        form = urlencode([("hub.mode", "publish"), *[("hub.url", u) for u in urls]]).encode()
        try:
            async with open_session(self.timeout) as session:
                reply = await request(
                    session, "POST", self.hub, data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
                )
        except FAILURES as exc:
            log.warning("WebSub hub %s: %s", self.hub, exc.__class__.__name__, extra={"hub": self.hub})
            return False
        if reply.status >= 300:
            log.warning("WebSub hub %s answered %d", self.hub, reply.status, extra={"hub": self.hub})
            return False
        log.info("WebSub hub %s told about %d feeds", self.hub, len(urls), extra={"hub": self.hub})
        return True
