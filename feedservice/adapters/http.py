"""Async HTTP GET with conditional headers, a decoded-size cap and bounded redirects (httpx).

Tests and callers may inject their own ``httpx.AsyncClient`` (e.g. with a MockTransport).
"""

from __future__ import annotations

import email.utils
import logging
from datetime import UTC, datetime

import httpx

from feedservice import __version__
from feedservice.errors import FetchError
from feedservice.model import FetchResult

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5


def user_agent(site_url: str) -> str:
    return f"feedservice/{__version__} (+{site_url})"


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class HttpFetcher:
    """Fetch feeds: conditional GET, at most ``max_bytes`` after decoding, ``MAX_REDIRECTS`` hops."""

    def __init__(
        self,
        *,
        user_agent: str,
        connect_timeout: float = 5.0,
        timeout: float = 30.0,
        max_bytes: int = 10 * 1024 * 1024,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            headers={"User-Agent": user_agent},
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            trust_env=False,
        )

    async def fetch(self, url: str, *, etag: str | None = None, last_modified: str | None = None) -> FetchResult:
        headers = {"Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5"}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            async with self._client.stream("GET", url, headers=headers) as resp:
                if resp.status_code == 304:
                    return FetchResult(url, 304, headers=dict(resp.headers), final_url=str(resp.url))
                if resp.status_code >= 400:
                    raise FetchError(
                        url,
                        f"HTTP {resp.status_code} {resp.reason_phrase}".strip(),
                        retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                        gone=resp.status_code == 410,
                    )
                declared = resp.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise FetchError(url, f"body of {declared} bytes is over the {self.max_bytes}-byte limit")
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise FetchError(url, f"body is over the {self.max_bytes}-byte limit")
                return FetchResult(
                    url, resp.status_code, bytes(body), headers=dict(resp.headers), final_url=str(resp.url)
                )
        except FetchError:
            raise
        except httpx.TooManyRedirects:
            raise FetchError(url, f"more than {MAX_REDIRECTS} redirects") from None
        except httpx.TimeoutException as exc:
            raise FetchError(url, f"timed out ({exc.__class__.__name__})") from None
        except httpx.DecodingError as exc:
            raise FetchError(url, f"cannot decode the response body: {exc}") from None
        except httpx.HTTPError as exc:
            raise FetchError(url, f"{exc.__class__.__name__}: {exc or 'connection failed'}") from None

    async def aclose(self) -> None:
        await self._client.aclose()
