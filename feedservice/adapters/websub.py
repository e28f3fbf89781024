"""WebSub publisher: tell the hub that feeds changed, so subscribers get them pushed.

A ping is ``POST hub`` with ``hub.mode=publish`` and one ``hub.url`` per changed feed (the
form most hubs accept). A failing hub is logged and otherwise ignored: readers still poll.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import urlencode

import httpx

from feedservice import __version__

log = logging.getLogger(__name__)


class WebSubPublisher:
    def __init__(self, hub: str, *, timeout: float = 10.0) -> None:
        self.hub = hub
        self.timeout = timeout

    async def publish(self, urls: Sequence[str]) -> bool:
        if not urls:
            return True
        form = urlencode([("hub.mode", "publish"), *[("hub.url", u) for u in urls]])
        try:
            async with httpx.AsyncClient(
                timeout=self.timeout, trust_env=False, headers={"User-Agent": f"feedservice/{__version__}"}
            ) as client:
                resp = await client.post(
                    self.hub, content=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
                )
        except httpx.HTTPError as exc:
            log.warning("WebSub hub %s: %s", self.hub, exc.__class__.__name__, extra={"hub": self.hub})
            return False
        if resp.status_code >= 300:
            log.warning("WebSub hub %s answered %d", self.hub, resp.status_code, extra={"hub": self.hub})
            return False
        log.info("WebSub hub %s told about %d feeds", self.hub, len(urls), extra={"hub": self.hub})
        return True
