"""The web app: prebuilt feeds (``feedserver``), and through Starlette the index, digest web copies,
unsubscribe and preferences pages, and health checks."""

from __future__ import annotations

import logging
from datetime import date

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from feedservice.bootstrap import BUNDLED_TEMPLATES, App
from feedservice.services.digest import PREFERENCES, UNSUBSCRIBE
from feedservice.services.feeds import ALL, feed_urls
from feedservice.web.feedserver import FeedFiles, FeedServer
from feedservice.web.ops import ops_handlers
from feedservice.web.pageheaders import PageHeaders
from feedservice.web.requestchecks import AllowedHosts
from feedservice.web.subscribe import subscription_routes
from feedservice.web.webhooks import webhook_routes

log = logging.getLogger(__name__)


def create_app(app: App) -> ASGIApp:
    """The whole web app: feed files served directly, the pages through Starlette, both only
    for the host names of ``[web] hosts`` (``AllowedHosts``)."""
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

    stylesheet = (BUNDLED_TEMPLATES / "site.css").read_bytes()

    async def index(request: Request) -> Response:
        return HTMLResponse(index_html)

    async def site_css(request: Request) -> Response:
        return Response(
            stylesheet, media_type="text/css; charset=utf-8", headers={"Cache-Control": "public, max-age=3600"}
        )

    async def to_digest_list(request: Request) -> Response:
        return RedirectResponse(f"{base}/digest/", status_code=308)

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

    readyz, metrics = ops_handlers(app)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    routes = [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/site.css", site_css, methods=["GET", "HEAD"]),
        Route("/digest", to_digest_list, methods=["GET", "HEAD"]),
        Route("/digest/", digest_list, methods=["GET", "HEAD"]),
        Route("/digest/{day}", digest_page, methods=["GET", "HEAD"]),
        *subscription_routes(app, env, page),
        *webhook_routes(app),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    pages = Starlette(routes=routes, middleware=[Middleware(PageHeaders)])
    # Starlette's "add or drop the trailing slash" redirect builds its Location from the request's
    # Host header (web cache poisoning, an open redirect): the one such URL a reader types,
    # /digest, has its own redirect to the public URL instead.
    pages.router.redirect_slashes = False
    return AllowedHosts(FeedServer(FeedFiles(app.feeds_dir), slugs, max_age, pages), settings.allowed_hosts())


def app_from_environment() -> ASGIApp:
    """The app for one of several web worker processes: the config comes from FEEDSERVICE_CONFIG."""
    import os

    from feedservice.bootstrap import make_app
    from feedservice.config import load_settings
    from feedservice.logs import setup_logging

    settings = load_settings(os.environ["FEEDSERVICE_CONFIG"])
    setup_logging(settings.logging.level, json_lines=settings.logging.format == "json")
    return create_app(make_app(settings))
