"""The web app (Starlette): prebuilt feeds with validators, the index, digest web copies, unsubscribe.

Feed requests never touch the database or rebuild anything: they serve the files the
build wrote, cached in memory with their ETag and gzip form until the file changes.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import date
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from feedservice.entry.bootstrap import BUNDLED_TEMPLATES, App
from feedservice.model import SubscriberStatus
from feedservice.services.digest import PREFERENCES, UNSUBSCRIBE
from feedservice.services.feeds import ALL, feed_urls
from feedservice.tokens import token_subscriber, verify_token

log = logging.getLogger(__name__)

FEED_NAME = re.compile(r"(?P<slug>[a-z0-9][a-z0-9_-]{0,63})\.(?P<ext>xml|atom|json)")
ARCHIVE_NAME = re.compile(r"(?P<n>[1-9][0-9]{0,8})\.(?P<ext>xml|atom|json)")
CONTENT_TYPES = {
    "xml": "application/rss+xml; charset=utf-8",
    "atom": "application/atom+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
    "opml": "text/x-opml; charset=utf-8",
}
IMMUTABLE = "public, max-age=31536000, immutable"
MAX_FORM_BYTES = 4096


@dataclass(frozen=True)
class _Cached:
    key: tuple[int, int]
    data: bytes
    gz: bytes
    etag: str
    last_modified: str
    mtime: int


class FeedFiles:
    """Built feed files, held in memory and re-read only when their mtime or size changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cache: dict[str, _Cached] = {}

    def get(self, name: str) -> _Cached | None:
        path = self.directory / name
        try:
            st = path.stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        hit = self._cache.get(name)
        if hit is not None and hit.key == key:
            return hit
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:32]
        hit = _Cached(
            key,
            data,
            gzip.compress(data, 6, mtime=0),
            f'"{digest}"',
            formatdate(int(st.st_mtime), usegmt=True),
            int(st.st_mtime),
        )
        self._cache[name] = hit
        return hit


def not_modified(request: Request, etags: tuple[str, ...], mtime: int) -> bool:
    """RFC 9110 §13.2.2: If-None-Match decides when present; otherwise If-Modified-Since."""
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return "*" in tags or any(e in tags for e in etags)
    ims = request.headers.get("if-modified-since")
    if ims:
        try:
            return int(parsedate_to_datetime(ims).timestamp()) >= mtime
        except (TypeError, ValueError):
            return False
    return False


def create_app(app: App) -> Starlette:
    settings = app.settings
    files = FeedFiles(app.feeds_dir)
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
        html = env.get_template("page.html.j2").render(title=title, site_name=settings.site.name, **kw)
        return HTMLResponse(html, status_code=status)

    async def index(request: Request) -> Response:
        return HTMLResponse(index_html)

    def serve_file(request: Request, name: str, media_type: str, cache_control: str) -> Response:
        hit = files.get(name)
        if hit is None:
            return PlainTextResponse("this feed has not been built yet\n", status_code=404)
        gz = "gzip" in request.headers.get("accept-encoding", "")
        etag = hit.etag[:-1] + '-gz"' if gz else hit.etag
        headers = {
            "ETag": etag,
            "Last-Modified": hit.last_modified,
            "Vary": "Accept-Encoding",
            "Cache-Control": cache_control,
        }
        if not_modified(request, (hit.etag, hit.etag[:-1] + '-gz"'), hit.mtime):
            return Response(status_code=304, headers=headers)
        body = hit.gz if gz else hit.data
        if gz:
            headers["Content-Encoding"] = "gzip"
        return Response(body, headers=headers, media_type=media_type)

    async def feed(request: Request) -> Response:
        m = FEED_NAME.fullmatch(request.path_params["name"])
        if not m or m["slug"] not in slugs:
            return PlainTextResponse("unknown feed\n", status_code=404)
        return serve_file(request, m.group(0), CONTENT_TYPES[m["ext"]], f"public, max-age={max_age}")

    async def archive(request: Request) -> Response:
        m = ARCHIVE_NAME.fullmatch(request.path_params["name"])
        if not m or request.path_params["slug"] not in slugs:
            return PlainTextResponse("unknown archive page\n", status_code=404)
        name = f"archive/{request.path_params['slug']}/{m.group(0)}"
        return serve_file(request, name, CONTENT_TYPES[m["ext"]], IMMUTABLE)

    async def opml(request: Request) -> Response:
        return serve_file(request, "index.opml", CONTENT_TYPES["opml"], f"public, max-age={max_age}")

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
        if sub is None or not verify_token(app.secret(), token, purpose, sub.id, sub.email, app.clock()):
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
            app.store.set_subscriber_status(sub.email, SubscriberStatus.UNSUBSCRIBED)
            log.info("unsubscribed subscriber %d", sub.id)
        return page("수신 거부 완료", message="더 이상 뉴스레터를 보내지 않습니다.")

    async def preferences(request: Request) -> Response:
        sub = _subscriber_for(request.path_params["token"], "preferences")
        if sub is None:
            return page("잘못된 링크", 400, message="링크가 올바르지 않거나 만료되었습니다.")
        titles = {s.slug: s.title for s in settings.sections}
        chosen = ", ".join(titles.get(s, s) for s in sub.sections) if sub.sections else "모든 분야"
        return page("구독 설정", message=f"{sub.email}: {chosen} ({sub.status.value})")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    routes = [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/feeds/index.opml", opml, methods=["GET", "HEAD"]),
        Route("/feeds/archive/{slug}/{name}", archive, methods=["GET", "HEAD"]),
        Route("/feeds/{name}", feed, methods=["GET", "HEAD"]),
        Route("/digest/", digest_list, methods=["GET", "HEAD"]),
        Route("/digest/{day}", digest_page, methods=["GET", "HEAD"]),
        Route("/unsubscribe", unsubscribe_help, methods=["GET"]),
        Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
        Route("/preferences/{token}", preferences, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
    ]
    return Starlette(routes=routes)
