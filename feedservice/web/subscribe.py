"""The subscription pages: sign up (double opt-in), confirm, preferences. Plain forms, no JavaScript.

Every form carries a CSRF token (a signed double-submit cookie) and is refused from another
site's Origin; bodies are capped; sign-ups are rate-limited per client address; the answer to
a sign-up is the same, and takes the same time, whether the address is new, known or subscribed
(no enumeration: the per-address work runs after the answer), and a confirmation mail goes to
one address at most once an hour.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import jinja2
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from feedservice.bootstrap import App
from feedservice.model import Subscriber, SubscriberStatus
from feedservice.services.subscribers import InvalidAddress, normalize_email, request_signup
from feedservice.tokens import csrf_token, make_token, new_nonce, token_subscriber, verify_csrf, verify_token
from feedservice.web.clients import ClientAddress, RateLimit
from feedservice.web.forms import FormError, read_form
from feedservice.web.requestchecks import origin_allowed

log = logging.getLogger(__name__)

CSRF_COOKIE = "fs_csrf"
CONFIRM_HOURS = 48
CONFIRM_AGE = timedelta(hours=CONFIRM_HOURS)  # a confirmation link's life, checked when it is used


def is_safe(request: Request) -> bool:
    """GET or HEAD: Starlette answers HEAD on every GET route, and neither may change anything."""
    return request.method in ("GET", "HEAD")


def is_one_click(form: dict[str, list[str]]) -> bool:
    """RFC 8058 §3.2: the POST carries exactly ``List-Unsubscribe=One-Click``."""
    return form.get("List-Unsubscribe") == ["One-Click"]


def subscription_routes(app: App, env: jinja2.Environment, page: Callable[..., HTMLResponse]) -> list[Route]:
    settings = app.settings
    base = settings.site.public_url.rstrip("/")
    sections = [{"slug": s.slug, "title": s.title} for s in settings.sections]
    known = {s.slug for s in settings.sections}
    limiter = RateLimit(settings.web.subscribe_per_hour)
    client_address = ClientAddress(settings.web.trusted_proxies)
    public_origin = "{0.scheme}://{0.netloc}".format(urlsplit(settings.site.public_url))
    hosts = settings.allowed_hosts()

    def render(template: str, request: Request, status: int = 200, **kw: Any) -> HTMLResponse:
        cookie = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        html = env.get_template(template).render(
            site_name=settings.site.name, csrf=csrf_token(app.secret(), cookie), **kw
        )
        response = HTMLResponse(html, status_code=status)
        if request.cookies.get(CSRF_COOKIE) != cookie:
            response.set_cookie(
                CSRF_COOKIE,
                cookie,
                httponly=True,
                samesite="strict",
                path="/",
                secure=public_origin.startswith("https:"),
            )
        return response

    def check_csrf(request: Request, form: dict[str, list[str]]) -> None:
        # Our origins are the names of [web] hosts, never the request's own Host: a DNS-rebinding
        # page's request names the attacker's host in both (web/requestchecks.py).
        origin = request.headers.get("origin")
        if origin and origin != "null" and not origin_allowed(origin, hosts):
            raise FormError(403, "다른 사이트에서 보낸 요청은 받지 않습니다.")
        cookie = request.cookies.get(CSRF_COOKIE)
        sent = (form.get("csrf") or [""])[0]
        if not cookie or not verify_csrf(app.verify_secrets(), cookie, sent):
            raise FormError(403, "페이지가 오래되었습니다. 새로 고친 뒤 다시 시도해 주세요.")

    async def checked_form(request: Request) -> dict[str, list[str]]:
        """The form of a POST, size-checked and CSRF-checked; ``FormError`` otherwise."""
        form = await read_form(request)
        check_csrf(request, form)
        return form

    def subscriber_for(token: str, purpose: str) -> Subscriber | None:
        """The subscriber a mail link's token is valid for. Preferences links carry the token
        version, so those mailed before the reader left are dead; the unsubscribe link does not
        (a second one-click stays an idempotent success)."""
        sid = token_subscriber(token)
        sub = app.store.get_subscriber_by_id(sid) if sid is not None else None
        if sub is None:
            return None
        version = sub.token_version if purpose == "preferences" else 0
        if not verify_token(app.verify_secrets(), token, purpose, sub.id, sub.email_hash, app.clock(), version):
            return None
        return sub

    def client(request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_address.of(peer, request.headers.getlist("x-forwarded-for"))

    signup_lock = threading.Lock()

    def record_signup(email: str, chosen: list[str]) -> str | None:
        """The sign-up's database work; the confirmation link to mail, if one is due. One at a
        time in this process, so two sign-ups of one address cannot race."""
        with signup_lock:
            outcome = request_signup(app.store, email, chosen, app.clock())
            if not outcome.send_confirmation:
                return None
            nonce = new_nonce()
            app.store.start_confirmation(outcome.subscriber.id, nonce, app.clock())
            sub = outcome.subscriber
            token = make_token(app.secret(), f"confirm:{nonce}", sub.id, sub.email_hash, now=app.clock())
            return f"{base}/confirm/{token}"

    async def process_signup(email: str, chosen: list[str]) -> None:
        """Everything about a sign-up that depends on the address (is it known? subscribed? a
        mail due?), run after the answer has gone, so the answer takes the same time for every
        address and cannot tell a stranger which ones are on the list (issue 13)."""
        try:
            confirm_url = await run_in_threadpool(record_signup, email, chosen)
        except Exception as exc:  # the answer is sent: log it, the reader can ask again
            log.error("recording a sign-up failed: %s: %s", exc.__class__.__name__, exc)
            return
        if confirm_url is not None:
            await app.send_confirmation(email, confirm_url, CONFIRM_HOURS)

    async def subscribe(request: Request) -> Response:
        if is_safe(request):
            return render(
                "subscribe.html.j2",
                request,
                title="구독",
                action="/subscribe",
                sections=sections,
                chosen=[],
                email="",
                error=None,
            )
        try:
            form = await checked_form(request)
        except FormError as exc:
            return page("요청을 처리할 수 없습니다", exc.status, message=exc.message)
        chosen = [s for s in form.get("sections", []) if s in known]
        raw = (form.get("email") or [""])[0]
        try:
            email = normalize_email(raw)
        except InvalidAddress:
            return render(
                "subscribe.html.j2",
                request,
                400,
                title="구독",
                action="/subscribe",
                sections=sections,
                chosen=chosen,
                email=raw[:254].replace("\r", "").replace("\n", ""),
                error="올바른 이메일 주소를 입력해 주세요.",
            )
        if not limiter.allow(client(request)):
            return page("잠시 후 다시 시도해 주세요", 429, message="짧은 시간에 너무 많은 신청이 있었습니다.")
        response = page(
            "메일을 확인해 주세요",
            message=(
                "입력하신 주소로 확인 메일을 보냈습니다. 메일의 링크를 눌러야 구독이 시작됩니다. "
                "메일이 오지 않으면 스팸함을 확인해 주세요."
            ),
        )
        # Nothing above depended on whether the address is known; what does runs after the answer.
        response.background = BackgroundTask(process_signup, email, chosen)
        return response

    async def confirm(request: Request) -> Response:
        token = request.path_params["token"]
        sid = token_subscriber(token)
        sub = app.store.get_subscriber_by_id(sid) if sid is not None else None
        nonce = sub.confirm_nonce if sub else None
        if (
            sub is None
            or nonce is None
            or not verify_token(
                app.verify_secrets(),
                token,
                f"confirm:{nonce}",
                sub.id,
                sub.email_hash,
                app.clock(),
                max_age=CONFIRM_AGE,
            )
        ):
            return page(
                "링크를 쓸 수 없습니다",
                400,
                message="링크가 만료되었거나 이미 사용되었습니다. 아무것도 바뀌지 않았습니다.",
                link=("다시 신청하기", "/subscribe"),
            )
        if is_safe(request):  # link scanners open links: a GET (or HEAD) confirms nothing
            return render(
                "page.html.j2",
                request,
                title="구독 확인",
                message=f"{sub.email} 주소로 뉴스레터를 받으시겠습니까?",
                form_action=f"/confirm/{token}",
                form_fields=[("csrf", None)],
                button="구독 확인",
            )
        try:
            await checked_form(request)
        except FormError as exc:
            return page("요청을 처리할 수 없습니다", exc.status, message=exc.message)
        if not app.store.consume_confirmation(sub.id, nonce, app.clock()):
            return page("링크를 쓸 수 없습니다", 400, message="링크가 만료되었거나 이미 사용되었습니다.")
        log.info("subscriber %d confirmed", sub.id)
        prefs = make_token(
            app.secret(), "preferences", sub.id, sub.email_hash, now=app.clock(), version=sub.token_version
        )
        return page(
            "구독이 시작되었습니다",
            message="내일 아침부터 뉴스레터를 보내 드립니다.",
            link=("받을 분야 바꾸기", f"/preferences/{prefs}"),
        )

    async def preferences(request: Request) -> Response:
        token = request.path_params["token"]
        sub = subscriber_for(token, "preferences")
        if sub is None:
            return page(
                "잘못된 링크", 400, message="링크가 올바르지 않거나 만료되었습니다. 아무것도 바뀌지 않았습니다."
            )
        if sub.status not in (SubscriberStatus.SUBSCRIBED, SubscriberStatus.PAUSED):
            return page(
                "구독 중이 아닙니다",
                message="이 주소는 지금 뉴스레터를 받지 않습니다.",
                link=("다시 구독하기", "/subscribe"),
            )
        message = None
        if not is_safe(request):
            try:
                form = await checked_form(request)
            except FormError as exc:
                return page("요청을 처리할 수 없습니다", exc.status, message=exc.message)
            chosen = [s for s in form.get("sections", []) if s in known]
            status = SubscriberStatus.PAUSED if form.get("paused") else SubscriberStatus.SUBSCRIBED
            app.store.set_subscriber_status(sub.id, status, chosen)
            sub = app.store.get_subscriber_by_id(sub.id) or sub
            message = "저장했습니다."
        unsubscribe = make_token(app.secret(), "unsubscribe", sub.id, sub.email_hash, now=app.clock())
        return render(
            "preferences.html.j2",
            request,
            title="구독 설정",
            email=sub.email,
            sections=sections,
            chosen=list(sub.sections),
            paused=sub.status is SubscriberStatus.PAUSED,
            message=message,
            action=f"/preferences/{token}",
            unsubscribe_url=f"/unsubscribe/{unsubscribe}",
        )

    async def unsubscribe_help(request: Request) -> Response:
        return page("수신 거부", message="받으신 뉴스레터 메일 아래의 ‘수신 거부’ 링크를 눌러 주세요.")

    async def unsubscribe(request: Request) -> Response:
        """RFC 8058: a POST (``List-Unsubscribe=One-Click``, no cookies) unsubscribes, idempotently;
        a GET or HEAD only asks (mail scanners prefetch links). The signed token is the authority;
        a POST without the one-click field (urlencoded or multipart) changes nothing."""
        sub = subscriber_for(request.path_params["token"], "unsubscribe")
        if sub is None:
            return page(
                "잘못된 링크", 400, message="링크가 올바르지 않거나 만료되었습니다. 아무것도 바뀌지 않았습니다."
            )
        if is_safe(request):
            if sub.status is SubscriberStatus.UNSUBSCRIBED:
                return page("수신 거부", message="이미 수신 거부되어 있습니다.")
            return page(
                "수신 거부",
                message=f"{sub.email} 주소로 보내는 뉴스레터를 그만 받으시겠습니까?",
                form_action=str(request.url.path),
                form_fields=[("List-Unsubscribe", "One-Click")],
                button="수신 거부",
            )
        try:
            form = await read_form(request)
        except FormError as exc:
            return page("요청을 처리할 수 없습니다", exc.status, message=exc.message)
        if not is_one_click(form):
            return page(
                "요청을 처리할 수 없습니다", 400, message="수신 거부 요청이 아닙니다. 아무것도 바뀌지 않았습니다."
            )
        if sub.status not in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.SUPPRESSED):
            app.store.set_subscriber_status(sub.id, SubscriberStatus.UNSUBSCRIBED)
            log.info("unsubscribed subscriber %d", sub.id)
        return page("수신 거부 완료", message="더 이상 뉴스레터를 보내지 않습니다.")

    return [
        Route("/unsubscribe", unsubscribe_help, methods=["GET"]),
        Route("/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
        Route("/subscribe", subscribe, methods=["GET", "POST"]),
        Route("/confirm/{token}", confirm, methods=["GET", "POST"]),
        Route("/preferences/{token}", preferences, methods=["GET", "POST"]),
    ]
