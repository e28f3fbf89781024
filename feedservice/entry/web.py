"""The web app: prebuilt feeds (``feedserver``), and through Starlette the index, digest web copies,
unsubscribe and preferences pages, and health checks."""

from __future__ import annotations

import logging
from datetime import date

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from feedservice.entry.bootstrap import BUNDLED_TEMPLATES, App
from feedservice.entry.feedserver import FeedFiles, FeedServer
from feedservice.entry.ops import ops_handlers
from feedservice.entry.subscribe import subscription_routes
from feedservice.model import SubscriberStatus
from feedservice.services.digest import PREFERENCES, UNSUBSCRIBE
from feedservice.services.feeds import ALL, feed_urls
from feedservice.tokens import token_subscriber, verify_token

log = logging.getLogger(__name__)

MAX_FORM_BYTES = 4096


def create_app(app: App) -> FeedServer:
    """The whole web app: feed files served directly, the pages through Starlette."""
    settings = app.settings
    slugs = {s.slug for s in settings.sections} | {ALL}
    max_age = settings.feeds.cache_max_age
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(BUNDLED_TEMPLATES)), autoescape=True)
    base = settings.site.public_url.rstrip("/")
    site = {"name": settings.site.name, "url": settings.site.url, "language": settings.site.language}
    index_html = env.get_template("index.html.j2").render(
        site=site,
        sections=[
            {"title": t, **feed_urls(app.feed_site, slug)}
            for slug, t in [(s.slug, s.title) for s in settings.sections] + [(ALL, "전체 기사")]
        ],
        digest_url=f"{base}/digest/",
        opml_url=f"{base}/feeds/index.opml",
    )

    def page(title: str, status: int = 200, **kw: object) -> HTMLResponse:
        html = env.get_template("page.html.j2").render(title=title, site_name=settings.site.name, csrf="", **kw)
        return HTMLResponse(html, status_code=status)

    async def index(request: Request) -> Response:
        return HTMLResponse(index_html)

    async def digest_list(request: Request) -> Response:
        editions = app.store.list_editions()
        items = [(f"{e.day.isoformat()} {e.subject}", f"{base}/digest/{e.day.isoformat()}") for e in editions]
        return page("지난 뉴스레터", items=items, message=None if items else "아직 발행된 뉴스레터가 없습니다.")

    async def digest_page(request: Request) -> Response:
        try:
            day = date.fromisoformat(request.path_params["day"])
        except ValueError:
            return PlainTextResponse("not a date (YYYY-MM-DD)\n", status_code=404)
        stored = app.store.get_edition(day)
        if stored is None:
            return PlainTextResponse("no edition on that day\n", status_code=404)
        html = stored[1].replace(UNSUBSCRIBE, f"{base}/unsubscribe").replace(PREFERENCES, f"{base}/")
        return HTMLResponse(html)

    def _subscriber_for(token: str, purpose: str):  # type: ignore[no-untyped-def]
        sid = token_subscriber(token)
        sub = app.store.get_subscriber_by_id(sid) if sid is not None else None
        if sub is None or not verify_token(app.secret(), token, purpose, sub.id, sub.email_hash, app.clock()):
            return None
        return sub

    async def unsubscribe_help(request: Request) -> Response:
        return page("수신 거부", message="받으신 뉴스레터 메일 아래의 ‘수신 거부’ 링크를 눌러 주세요.")

    async def unsubscribe(request: Request) -> Response:
        token = request.path_params["token"]
        sub = _subscriber_for(token, "unsubscribe")
        if sub is None:
            return page(
                "잘못된 링크", 400, message="링크가 올바르지 않거나 만료되었습니다. 아무것도 바뀌지 않았습니다."
            )
        if request.method == "GET":
            if sub.status is SubscriberStatus.UNSUBSCRIBED:
                return page("수신 거부", message="이미 수신 거부되어 있습니다.")
            # A GET never unsubscribes: mail scanners prefetch links (RFC 8058 §3.2).
            return page(
                "수신 거부",
                message=f"{sub.email} 주소로 보내는 뉴스레터를 그만 받으시겠습니까?",
                form_action=str(request.url.path),
                form_fields=[("List-Unsubscribe", "One-Click")],
                button="수신 거부",
            )
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return PlainTextResponse("request too large\n", status_code=413)
        if sub.status in (SubscriberStatus.SUBSCRIBED, SubscriberStatus.UNCONFIRMED):
            app.store.set_status(sub.id, SubscriberStatus.UNSUBSCRIBED)
            log.info("unsubscribed subscriber %d", sub.id)
        return page("수신 거부 완료", message="더 이상 뉴스레터를 보내지 않습니다.")

    readyz, metrics = ops_handlers(app)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    routes = [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/digest/", digest_list, methods=["GET", "HEAD"]),
        Route("/digest/{day}", digest_page, methods=["GET", "HEAD"]),
        Route("/unsubscribe", unsubscribe_help, methods=["GET"]),
        Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
        *subscription_routes(app, env, page),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return FeedServer(FeedFiles(app.feeds_dir), slugs, max_age, Starlette(routes=routes))


def app_from_environment() -> FeedServer:
    """The app for one of several web worker processes: the config comes from FEEDSERVICE_CONFIG."""
    import os

    from feedservice.config import load_settings
    from feedservice.entry.bootstrap import make_app
    from feedservice.entry.logs import setup_logging

    settings = load_settings(os.environ["FEEDSERVICE_CONFIG"])
    setup_logging(settings.logging.level, json_lines=settings.logging.format == "json")
    return create_app(make_app(settings))
