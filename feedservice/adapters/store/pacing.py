"""Storage of mailbox providers' pauses (``domain_pauses``): what `digest status` shows, and what
a new run honours after a restart."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from feedservice.adapters.store import schema as t
from feedservice.adapters.store._base import StoreBase
from feedservice.model import DomainPause


class PacingStoreMixin(StoreBase):
    def domain_pauses(self) -> list[DomainPause]:
        """Every lane's last pause (past ones too: a repeat doubles the next), by lane."""
        p = t.domain_pauses.c
        with self._tx("reading domain pauses") as conn:
            rows = conn.execute(sa.select(t.domain_pauses).order_by(p.lane)).all()
        return [DomainPause(r.lane, r.until, int(r.strikes), r.reason) for r in rows]

    def save_domain_pause(self, pause: DomainPause) -> None:
        values = {"until": pause.until, "strikes": pause.strikes, "reason": pause.reason}
        with self._tx("recording a domain pause") as conn:
            stmt = self._insert(t.domain_pauses).values(lane=pause.lane, **values)
            conn.execute(stmt.on_conflict_do_update(index_elements=["lane"], set_=values))

    def paused_domains(self, now: datetime) -> list[DomainPause]:
        """The lanes paused at ``now``."""
        return [p for p in self.domain_pauses() if p.until > now]
