"""HTTP to the services the operator configures: the weather providers and the WebSub hub.

The same client library as the collector (aiohttp), so the service has one HTTP stack, one set
of timeouts and one set of exceptions to turn into its own. One session per call (a weather
fetch or a ping runs a few times an hour: nothing to keep warm).

The feed fetcher's SSRF guard (``adapters/http.py``) is deliberately not applied here. It exists
because feed URLs and their redirects come from strangers; these URLs come from the operator's
config (``[weather] base_url``, ``fallback_base_url``, ``[feeds] websub_hub``), and a private
address there is a legitimate choice (a caching proxy, a hub on the same host, the tests' servers).
What a stranger could still steer is a redirect, so none is followed (as with httpx before): a
3xx is the answer, and each caller treats it as a failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp

from feedservice import __version__

__all__ = ["FAILURES", "Reply", "describe", "get", "get_bounded", "open_session", "request"]

# What a request can raise: the library's errors and its timeouts (TimeoutError in Python 3.11+).
FAILURES: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    charset: str | None = None

    def text(self, encoding: str | None = None) -> str:
        """The body as text: ``encoding``, else the declared charset, else UTF-8; bad bytes replaced."""
        try:
            return self.body.decode(encoding or self.charset or "utf-8", errors="replace")
        except LookupError:  # an unknown charset name in the header
            return self.body.decode("utf-8", errors="replace")


@contextlib.asynccontextmanager
async def open_session(timeout: float) -> AsyncIterator[aiohttp.ClientSession]:
    """A session whose every request has ``timeout`` seconds in all; no proxy from the environment."""
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"User-Agent": f"feedservice/{__version__}"},
        trust_env=False,
    ) as session:
        yield session


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    params: Mapping[str, str] | None = None,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """One request, its whole body read; redirects are not followed. Raises one of ``FAILURES``."""
    async with session.request(method, url, params=params, data=data, headers=headers, allow_redirects=False) as resp:
        return Reply(resp.status, await resp.read(), resp.charset)


async def get(url: str, params: Mapping[str, str], *, session: aiohttp.ClientSession | None, timeout: float) -> Reply:
    """GET ``url`` on the caller's session (injected, e.g. by a test), else on one of its own."""
    if session is not None:
        return await request(session, "GET", url, params=params)
    async with open_session(timeout) as own:
        return await request(own, "GET", url, params=params)


async def get_bounded(url: str, *, timeout: float, max_bytes: int) -> bytes:
    """GET ``url`` (no redirects) and its body of at most ``max_bytes``; ``ValueError`` for any
    other answer than 200 or a bigger body, else one of ``FAILURES``."""
    async with open_session(timeout) as session, session.get(url, allow_redirects=False) as resp:
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(16384):
            body += chunk
            if len(body) > max_bytes:
                raise ValueError(f"more than {max_bytes} bytes")
    return bytes(body)


def describe(exc: BaseException) -> str:
    """A failure in a few words for an error message: its class and text."""
    return f"{exc.__class__.__name__}: {exc or 'request failed'}"
