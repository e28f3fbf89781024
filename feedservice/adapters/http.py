"""Fetching feeds over HTTP (aiohttp): polite, bounded, and safe against hostile servers.

- Conditional GET with the stored ETag / Last-Modified; a 304 costs no body.
- SSRF guard, in three places that each see the host as the connection uses it: every hop's
  URL is parsed by yarl, as aiohttp will (so ``１２７.０.０.１``, ``127。0。0。1`` and
  ``①②⑦.⓪.⓪.①`` are the IP literal 127.0.0.1 they become after IDNA/UTS #46 mapping, and are
  checked as one); names are checked by the connector's resolver; and the socket factory checks
  the address each socket actually connects to, whatever path led there (so DNS rebinding, a
  normalisation we did not foresee or a redirect cannot reach an internal address).
  ``allow_hosts`` (names, addresses or CIDR ranges) admits internal hosts.
- Redirects are followed by hand (at most ``MAX_REDIRECTS``) so each hop is checked and a
  chain of only 301/308 is reported as a permanent move.
- The body is capped while streaming *after* gzip/deflate/brotli decoding (a compression
  bomb stops at the cap), and the whole request has a total deadline (a server that
  trickles a byte a second cannot hold a worker).
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import ipaddress
import os
import socket
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

import aiohttp
import brotli
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from feedservice import __version__
from feedservice.config import CollectConfig
from feedservice.errors import FetchError
from feedservice.model import FetchResult

MAX_REDIRECTS = 5
REDIRECTS = {301, 302, 303, 307, 308}
PERMANENT = {301, 308}
ACCEPT = "application/rss+xml, application/atom+xml, application/feed+json, application/xml;q=0.9, */*;q=0.5"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def user_agent(site_url: str) -> str:
    return f"feedservice/{__version__} (+{site_url})"


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():  # str.isdigit admits "²" and "٣": only ASCII digits are delta-seconds
        return float(value) if value.isascii() else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to an IPv4 host: mapped ``::ffff:a.b.c.d``,
    IPv4-compatible ``::a.b.c.d``, 6to4 ``2002:aabb:ccdd::/48`` or NAT64 ``64:ff9b::a.b.c.d``."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private, link-local, CGNAT, multicast or reserved.

    An IPv6 address that reaches an IPv4 host (mapped, IPv4-compatible, 6to4, NAT64) is public
    only when the IPv4 address it carries is; site-local ``fec0::/10`` never is.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        if ip.is_site_local:
            return False
        inner = embedded_ipv4(ip)
        if inner is not None:
            return inner.is_global and not inner.is_multicast
    return ip.is_global and not ip.is_multicast


class HostPolicy:
    """Which hosts we may connect to: public addresses, plus what ``allow_hosts`` admits."""

    def __init__(self, allow_hosts: Sequence[str] = ()) -> None:
        self.names: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow_hosts:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                self.names.add(entry.strip().lower().rstrip("."))

        # Addresses that names in ``allow_hosts`` resolved to: the socket factory admits them.
        self.resolved: set[IPAddress] = set()

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def address_allowed(self, ip: IPAddress) -> bool:
        return is_public_address(ip) or any(ip in net for net in self.networks)

    def connect_allowed(self, ip: IPAddress) -> bool:
        """Whether a socket may connect to ``ip``: a public or admitted address, or one that a
        host admitted by name resolved to."""
        return self.address_allowed(ip) or ip in self.resolved


class BlockedAddressError(OSError):
    """A host resolved to, or a socket was about to connect to, an address the policy refuses."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, message)  # aiohttp shows the strerror in its own message

    def __str__(self) -> str:
        return str(self.strerror)


class GuardedResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, then refuses non-public answers."""

    def __init__(self, policy: HostPolicy) -> None:
        self.policy = policy
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self.policy.host_allowed(host):
            self.policy.resolved.update(ipaddress.ip_address(r["host"]) for r in results)
            return results
        for r in results:
            ip = ipaddress.ip_address(r["host"])
            if not self.policy.address_allowed(ip):
                raise BlockedAddressError(f"refused: {host} resolves to the non-public address {ip}")
        return results

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket_factory(policy: HostPolicy) -> Callable[[tuple[Any, ...]], socket.socket]:
    """aiohttp's ``socket_factory``: it is handed the very address each connection attempt goes
    to, on every hop and for every path (IP literals skip the resolver), and refuses it unless the
    policy admits it."""

    def create(addr_info: tuple[Any, ...]) -> socket.socket:  # (family, type, proto, name, sockaddr)
        family, kind, proto, _, sockaddr = addr_info
        ip = ipaddress.ip_address(sockaddr[0])
        if not policy.connect_allowed(ip):
            raise BlockedAddressError(f"refused: connecting to the non-public address {ip}")
        return socket.socket(family, kind, proto)

    return create


class BoundedDecoder:
    """Content-Encoding decoding that never produces more than ``limit`` bytes."""

    def __init__(self, url: str, encoding: str | None, limit: int) -> None:
        self.url, self.limit, self.size = url, limit, 0
        enc = (encoding or "identity").strip().lower()
        self.encoding = enc
        self._zlib: zlib._Decompress | None = None  # typeshed's name; the class is not exported
        self._brotli: Any = None  # a brotli.Decompressor; brotli ships no stubs
        if enc in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            pass  # zlib-wrapped or raw: decided by the first bytes
        elif enc == "br":
            self._brotli = brotli.Decompressor()
        elif enc != "identity":
            raise FetchError(url, f"unsupported Content-Encoding {encoding!r}")

    def feed(self, chunk: bytes) -> bytes:
        room = self.limit - self.size + 1  # one byte more than allowed tells "over the limit"
        out: bytes
        try:
            if self.encoding == "deflate" and self._zlib is None and chunk:
                # "deflate" is zlib-wrapped by the spec, raw DEFLATE in practice: look at the header.
                wrapped = len(chunk) >= 2 and chunk[0] & 0x0F == 8 and int.from_bytes(chunk[:2], "big") % 31 == 0
                self._zlib = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            if self._zlib is not None:
                out = self._zlib.decompress(chunk, room)
            elif self._brotli is not None:
                out = self._brotli.process(chunk, output_buffer_limit=room)
            else:
                out = chunk
        except (zlib.error, brotli.error) as exc:
            raise FetchError(self.url, f"cannot decode the {self.encoding} body: {exc}") from None
        self.size += len(out)
        if self.size > self.limit:
            raise FetchError(self.url, f"body is over the {self.limit}-byte limit (after decoding)")
        return out

    def flush(self) -> bytes:
        if self._zlib is not None:
            try:
                out = self._zlib.flush()
            except zlib.error as exc:
                raise FetchError(self.url, f"cannot decode the {self.encoding} body: {exc}") from None
            self.size += len(out)
            if self.size > self.limit:
                raise FetchError(self.url, f"body is over the {self.limit}-byte limit (after decoding)")
            return out
        return b""


class HttpFetcher:
    """The collector's HTTP client. One instance per collect run; ``aclose`` when done."""

    def __init__(
        self,
        *,
        user_agent: str,
        connect_timeout: float = 5.0,
        timeout: float = 30.0,
        max_bytes: int = 10 * 1024 * 1024,
        allow_hosts: Sequence[str] = (),
        concurrency: int = 100,
        per_host: int = 0,
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.policy = HostPolicy(allow_hosts)
        self._connect_timeout = connect_timeout
        self._user_agent = user_agent
        self._limits = (concurrency, per_host)
        self._session: aiohttp.ClientSession | None = None
        self._hosts_checked: dict[str, bool] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self.policy),
                socket_factory=guarded_socket_factory(self.policy),
                limit=self._limits[0],
                limit_per_host=self._limits[1],
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
                auto_decompress=False,
                headers={"User-Agent": self._user_agent, "Accept": ACCEPT, "Accept-Encoding": "gzip, deflate, br"},
                trust_env=False,
            )
        return self._session

    def _target(self, url: str, original: str) -> yarl.URL:
        """The URL as aiohttp will request it, if its host passes the policy.

        yarl applies IDNA/UTS #46 mapping, which turns fullwidth digits, ideographic full stops
        and circled digits into an IP literal; that literal is what gets checked (and later
        connected to, which the socket factory checks once more).
        """
        target = yarl.URL(url)
        if target.scheme not in ("http", "https") or not target.host:
            raise FetchError(original, f"refused: not an http(s) URL: {url[:200]}")
        if not self._literal_allowed(target.host):
            raise FetchError(original, f"refused: {target.host} is not a public address")
        return target

    def _literal_allowed(self, host: str) -> bool:
        """Whether an IP-literal host passes the policy; names pass here (the resolver checks them).

        Remembered per fetcher: a collect asks for the same few hosts again and again, and
        ipaddress's checks cost more than the rest of a 304 round trip on loopback."""
        allowed = self._hosts_checked.get(host)
        if allowed is None:
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                allowed = True
            else:
                allowed = self.policy.host_allowed(host) or self.policy.address_allowed(ip)
            self._hosts_checked[host] = allowed
        return allowed

    async def fetch(self, url: str, *, etag: str | None = None, last_modified: str | None = None) -> FetchResult:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._fetch(url, etag, last_modified)
        except TimeoutError:
            raise FetchError(url, f"no complete answer within {self.timeout:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            err = exc.os_error
            if isinstance(err, BlockedAddressError) or "refused: " in str(err):
                # (several addresses refused come as one OSError listing them all)
                raise FetchError(url, str(err.strerror or err)) from None
            # errno first ("Connection refused"); name-lookup errors have negative codes and their own text
            reason = os.strerror(err.errno) if err.errno and err.errno > 0 else (err.strerror or str(err))
            if isinstance(err, socket.gaierror):
                raise FetchError(url, f"cannot resolve {exc.host}: {reason}") from None
            raise FetchError(url, f"cannot connect to {exc.host}:{exc.port}: {reason}") from None
        except aiohttp.ClientError as exc:
            raise FetchError(url, f"{exc.__class__.__name__}: {exc}") from None
        except OSError as exc:
            raise FetchError(url, f"{exc.__class__.__name__}: {exc}") from None
        except ValueError as exc:  # a URL or header that urllib, yarl or aiohttp refuse
            raise FetchError(url, f"invalid URL or header: {exc.__class__.__name__}: {exc}") from None

    async def _fetch(self, url: str, etag: str | None, last_modified: str | None) -> FetchResult:
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        current, permanent, seen = url, True, [url]
        session = self._client()
        for _ in range(MAX_REDIRECTS + 1):
            target = self._target(current, url)
            async with session.get(target, headers=headers, allow_redirects=False) as resp:
                if resp.status in REDIRECTS:
                    location = resp.headers.get("Location")
                    if not location:
                        raise FetchError(url, f"HTTP {resp.status} without a Location header")
                    permanent = permanent and resp.status in PERMANENT
                    try:
                        current = urljoin(current, location.strip())
                    except ValueError as exc:  # "http://[::1/x": urllib refuses it
                        raise FetchError(
                            url, f"HTTP {resp.status} to an invalid Location {location[:200]!r}: {exc}"
                        ) from None
                    if current in seen:
                        raise FetchError(url, f"redirect loop at {current}")
                    seen.append(current)
                    continue
                moved = current if permanent and current != url else None
                resp_headers = {k.lower(): v for k, v in resp.headers.items()}
                if resp.status == 304:
                    return FetchResult(url, 304, headers=resp_headers, permanent_redirect=moved)
                if resp.status >= 400 or resp.status < 200 or resp.status >= 300:
                    raise FetchError(
                        url,
                        f"HTTP {resp.status} {resp.reason or ''}".strip(),
                        retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                        gone=resp.status == 410,
                    )
                body = await self._read(url, resp)
                return FetchResult(url, resp.status, body, resp_headers, permanent_redirect=moved)
        raise FetchError(url, f"more than {MAX_REDIRECTS} redirects")

    async def _read(self, url: str, resp: aiohttp.ClientResponse) -> bytes:
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchError(url, f"body of {declared} bytes is over the {self.max_bytes}-byte limit")
        decoder = BoundedDecoder(url, resp.headers.get("Content-Encoding"), self.max_bytes)
        body = bytearray()
        async for chunk in resp.content.iter_chunked(65536):
            body += decoder.feed(chunk)
        body += decoder.flush()
        return bytes(body)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def configured_fetcher(collect: CollectConfig, site_url: str) -> HttpFetcher:
    """The collector's client as ``[collect]`` sets it up, naming ``site_url`` in its User-Agent."""
    return HttpFetcher(
        user_agent=user_agent(site_url),
        connect_timeout=collect.connect_timeout,
        timeout=collect.timeout,
        max_bytes=collect.max_bytes,
        allow_hosts=collect.allow_hosts,
        concurrency=collect.concurrency,
        per_host=collect.per_host,
    )
