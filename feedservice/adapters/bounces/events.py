"""Provider events (webhook calls) as an intake, so they go through the same bounce check as mail.

A webhook call carries events already read (``ProviderEvent``: ``adapters/bounces/webhooks.py``);
this intake hands one to ``services.bounces.BounceCheck`` as one ``ReturnedMail`` whose ``raw`` is
the event as kept for a person, and ``read`` gives back the reading. ``done`` has nothing to move:
the record is the mark.
"""

from __future__ import annotations

from collections.abc import Iterator

from feedservice.bounce_model import BounceReading, ProviderEvent, ReturnedMail

__all__ = ["EventIntake"]


class EventIntake:
    def __init__(self, event: ProviderEvent) -> None:
        self.name = event.source
        self.mail = ReturnedMail(source=event.source, raw=event.raw, key=event.source)
        self.reading = event.reading

    def pending(self) -> Iterator[ReturnedMail]:
        yield self.mail

    def done(self, mail: ReturnedMail, *, matched: bool) -> None:
        return None

    def close(self) -> None:
        """An event holds nothing open."""

    def read(self, raw: bytes) -> BounceReading:
        return self.reading
