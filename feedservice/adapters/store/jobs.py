"""Storage of scheduled job runs: what `status`, `/readyz` and `/metrics` report, for every process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from feedservice.adapters.store import schema as t
from feedservice.adapters.store._base import StoreBase


@dataclass(frozen=True)
class JobRun:
    job: str
    started: datetime
    finished: datetime | None
    status: str
    detail: str | None


class JobStoreMixin(StoreBase):
    def job_started(self, job: str, now: datetime) -> int:
        with self._tx("recording a job run") as conn:
            res = conn.execute(
                t.job_runs.insert().values(job=job, started=now, status="running").returning(t.job_runs.c.id)
            )
            return int(res.scalar_one())

    def job_finished(self, run_id: int, status: str, now: datetime, detail: str | None = None) -> None:
        with self._tx("recording a job run") as conn:
            conn.execute(
                t.job_runs.update().where(t.job_runs.c.id == run_id).values(finished=now, status=status, detail=detail)
            )

    def job_skipped(self, job: str, now: datetime, detail: str) -> None:
        with self._tx("recording a job run") as conn:
            conn.execute(
                t.job_runs.insert().values(job=job, started=now, finished=now, status="skipped", detail=detail)
            )

    def job_run_counts(self) -> dict[tuple[str, str], int]:
        """(job, status) → how many runs, since the database was made."""
        r = t.job_runs
        q = sa.select(r.c.job, r.c.status, sa.func.count()).group_by(r.c.job, r.c.status)
        with self._tx("counting job runs") as conn:
            return {(job, status): int(n) for job, status, n in conn.execute(q)}

    def last_job_runs(self) -> dict[str, JobRun]:
        """The newest run of each job, and the newest successful one under the key "<job>:ok"."""
        r = t.job_runs
        out: dict[str, JobRun] = {}
        with self._tx("reading job runs") as conn:
            for row in conn.execute(sa.select(r).order_by(r.c.started, r.c.id)):
                run = JobRun(row.job, row.started, row.finished, row.status, row.detail)
                out[row.job] = run
                if row.status == "ok":
                    out[f"{row.job}:ok"] = run
        return out
