"""Provider events (webhook calls) as an intake, so they go through the same bounce check as mail.

A webhook call carries one event already read (``BounceReading``); this intake hands it to
``services.bounces.BounceCheck`` as one ``ReturnedMail`` whose ``raw`` is the event as kept for a
person, and ``read`` gives back the reading. ``done`` has nothing to move: the record is the mark.
"""

from __future__ import annotations

from collections.abc import Iterator

from feedservice.bounce_model import BounceReading, ReturnedMail

__all__ = ["EventIntake"]


class EventIntake:
    def __init__(self, source: str, raw: bytes, reading: BounceReading) -> None:
        self.name = source
        self.mail = ReturnedMail(source=source, raw=raw, key=source)
        self.reading = reading

    def pending(self) -> Iterator[ReturnedMail]:
        yield self.mail

    def done(self, mail: ReturnedMail, *, matched: bool) -> None:
        return None

    def close(self) -> None:
        """An event holds nothing open."""

    def read(self, raw: bytes) -> BounceReading:
        return self.reading
