"""Operations endpoints: `/readyz` and `/metrics` (Prometheus), read from the database so that every
process of a deployment answers the same."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import date

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from feedservice.bootstrap import App
from feedservice.bounce_model import BreakerWindow, EditionFeedback


class _Collector:
    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:  # prometheus_client's Collector protocol
        store = self.app.store
        sources = GaugeMetricFamily("feedservice_sources", "Configured sources by state", labels=["state"])
        states = {"ok": 0, "failing": 0, "disabled": 0, "never_fetched": 0}
        for s in store.list_sources(with_counts=False):
            key = (
                "disabled"
                if not s.enabled
                else "failing"
                if s.failures
                else "ok"
                if s.last_success
                else "never_fetched"
            )
            states[key] += 1
        for state, n in states.items():
            sources.add_metric([state], n)
        yield sources
        yield GaugeMetricFamily("feedservice_articles", "Articles stored", value=store.count_articles())
        deliveries = GaugeMetricFamily(
            "feedservice_deliveries", "Deliveries of the latest edition by status", labels=["edition", "status"]
        )
        editions = store.list_editions(limit=1)
        if editions:
            for status, n in store.delivery_counts(editions[0].day).items():
                deliveries.add_metric([editions[0].day.isoformat(), status], n)
        yield deliveries
        if editions:
            yield from feedback_metrics(editions[0].day, store.edition_feedback(editions[0].day))
        yield from breaker_metrics(self.app.bounce_breaker())
        duration = GaugeMetricFamily(
            "feedservice_job_last_duration_seconds", "How long each job's last run took", labels=["job"]
        )
        success = GaugeMetricFamily(
            "feedservice_job_last_success_timestamp_seconds", "When each job last succeeded (Unix time)", labels=["job"]
        )
        failed = GaugeMetricFamily("feedservice_job_last_run_failed", "1 if the job's last run failed", labels=["job"])
        for key, run in store.last_job_runs().items():
            if key.endswith(":ok"):
                success.add_metric([run.job], (run.finished or run.started).timestamp())
                continue
            if run.finished is not None:
                duration.add_metric([key], (run.finished - run.started).total_seconds())
            failed.add_metric([key], 1.0 if run.status == "failed" else 0.0)
        yield duration
        yield success
        yield failed
        runs = CounterMetricFamily(
            "feedservice_job_runs", "Job runs by result (feeds: feed builds)", labels=["job", "status"]
        )
        for (job, status), n in store.job_run_counts().items():
            runs.add_metric([job, status], n)
        yield runs


def feedback_metrics(day: date, feedback: EditionFeedback) -> list[GaugeMetricFamily]:
    """What came back from the latest edition: readers by kind, and each kind's share (bounces of the
    messages sent, complaints and unsubscribes of those delivered)."""
    counts = GaugeMetricFamily(
        "feedservice_edition_feedback", "Readers of the latest edition by what came back", labels=["edition", "kind"]
    )
    rates = GaugeMetricFamily(
        "feedservice_edition_feedback_rate",
        "Share of the latest edition's messages: bounces "
        "of those sent (delivered or refused while sending), complaints and unsubscribes of "
        "those delivered (complaints: keep under 0.001)",
        labels=["edition", "kind"],
    )
    for kind in ("delivered", "refused", "hard", "soft", "complaints", "unsubscribes"):
        counts.add_metric([day.isoformat(), kind], getattr(feedback, kind))
        if kind not in ("delivered", "refused"):
            rates.add_metric([day.isoformat(), kind], feedback.kind_rate(kind))
    return [counts, rates]


def breaker_metrics(window: BreakerWindow) -> list[GaugeMetricFamily]:
    """The bounce breaker, as `digest status` shows it: the suppressions it counts in its window,
    and those it holds until an operator looks and runs `feedservice bounces check --force`."""
    return [
        GaugeMetricFamily(
            "feedservice_bounce_breaker_suppressions",
            "Readers suppressed by bounces and complaints in the breaker's window (24 h, or since the last --force)",
            value=window.suppressed,
        ),
        GaugeMetricFamily(
            "feedservice_bounce_breaker_held",
            "Suppressions the bounce breaker holds, waiting for `feedservice bounces check --force` (alert when > 0)",
            value=window.held,
        ),
    ]


_Endpoint = Callable[[Request], Awaitable[Response]]


def ops_handlers(app: App) -> tuple[_Endpoint, _Endpoint]:
    """The `/readyz` and `/metrics` endpoints."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(app))

    async def readyz(request: Request) -> Response:
        ok, why = app.readiness()
        return PlainTextResponse(why + "\n", status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8")

    return readyz, metrics
