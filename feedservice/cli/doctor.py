"""`feedservice doctor`: what can be checked offline about how the digest will be received.

Each check is one line, ``ok`` or ``FAIL`` and why: a DKIM key of at least 2048 bits, the
signature's ``d=`` and the envelope sender's domain aligned with From (DMARC, relaxed), the
one-click unsubscribe headers present and signed, a postal address in the footer. The message
checked is a real one — a sample edition rendered with the configured templates, composed and
signed as ``digest send`` does — not a reading of the config. Then the DNS records to publish:
SPF, the DKIM key (from the configured private key), a starting DMARC policy. Nothing is looked
up in DNS (docs/deliverability.md says what the providers check there).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parseaddr

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from feedservice.adapters.dkim import MIN_RSA_BITS
from feedservice.bootstrap import App
from feedservice.cli.preview import PREVIEW_TO, sample_links
from feedservice.errors import FeedServiceError
from feedservice.model import Article, Edition, WeatherBlock
from feedservice.services.digest import compose, message_id, pick_sections

ONE_CLICK = ("list-unsubscribe", "list-unsubscribe-post")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def aligned(domain: str, from_domain: str) -> bool:
    """DMARC relaxed alignment, without the public suffix list: the same domain, or one a
    subdomain of the other (``bounces.newsspace.kr`` with ``newsspace.kr``)."""
    a, b = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def _domain(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2].lower()


def txt_strings(value: str) -> str:
    """A TXT value as DNS zone strings of at most 255 characters each (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
    return " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))


class Doctor:
    def __init__(self, app: App) -> None:
        self.app, self.settings = app, app.settings
        self.from_domain = _domain(self.settings.digest.from_)
        self.records: list[str] = []

    def run(self) -> list[Check]:
        checks = [self._dkim_key(), self._dkim_alignment(), self._envelope_alignment()]
        checks += self._message_checks()
        self._records()
        return checks

    # -- checks ----------------------------------------------------------------------------------
    def _dkim_key(self) -> Check:
        d = self.settings.digest
        if not d.dkim_selector:
            return Check(
                "dkim key",
                False,
                "signing is off: set [digest] dkim_selector and the key in "
                f"${d.dkim_key_env} (Naver, Gmail and Yahoo require DKIM)",
            )
        secret = self.settings.secret(d.dkim_key_env)
        if not secret:
            return Check("dkim key", False, f"${d.dkim_key_env} (or ${d.dkim_key_env}_FILE) is empty")
        try:
            key = serialization.load_pem_private_key(secret.get_secret_value().encode(), password=None)
        except (ValueError, TypeError) as exc:
            return Check("dkim key", False, f"${d.dkim_key_env} is not a PEM private key without a password: {exc}")
        if not isinstance(key, rsa.RSAPrivateKey):
            return Check("dkim key", False, f"${d.dkim_key_env} is not an RSA key")
        if key.key_size < MIN_RSA_BITS:
            return Check("dkim key", False, f"RSA {key.key_size} bits: at least {MIN_RSA_BITS} are expected")
        return Check("dkim key", True, f"RSA {key.key_size} bits from ${d.dkim_key_env}")

    def _dkim_alignment(self) -> Check:
        d_domain = (self.settings.digest.dkim_domain or self.from_domain).lower()
        ok = aligned(d_domain, self.from_domain)
        why = "" if ok else ": DMARC fails on DKIM; set [digest] dkim_domain to the From domain"
        return Check("dkim d= aligned with From", ok, f"d={d_domain}, From {self.from_domain}{why}")

    def _envelope_alignment(self) -> Check:
        # The envelope sender (Return-Path) is the From address, unless [bounces] return_path
        # gives each message its own (VERP) at that address's domain.
        bounces = self.settings.bounces
        envelope = (bounces.return_path if bounces is not None else None) or self.settings.digest.from_
        domain = _domain(envelope)
        ok = aligned(domain, self.from_domain)
        return Check(
            "return-path aligned with From",
            ok,
            f"{domain}, From {self.from_domain}"
            + ("" if ok else ": SPF passes for another domain, so DMARC relies on DKIM alone"),
        )

    def _message_checks(self) -> list[Check]:
        try:
            message = self._sample_message()
        except FeedServiceError as exc:
            return [Check("sample digest", False, f"cannot build one: {exc}")]
        postal = self._postal_address(message_from_bytes(message, policy=policy.SMTP))
        try:
            signer = self.app.signer()
        except FeedServiceError as exc:  # e.g. a key too short to sign with
            return [Check("one-click unsubscribe signed", False, f"cannot sign: {exc}"), postal]
        parsed = message_from_bytes(signer.sign(message) if signer is not None else message, policy=policy.SMTP)
        present = [name for name in ONE_CLICK if parsed[name] is not None]
        signed: set[str] = set()
        for sig in parsed.get_all("DKIM-Signature") or []:
            tags = dict(part.strip().split("=", 1) for part in str(sig).replace("\r\n", "").split(";") if "=" in part)
            signed |= {h.strip().lower() for h in tags.get("h", "").split(":")}
        post = str(parsed["List-Unsubscribe-Post"] or "")
        if len(present) < len(ONE_CLICK) or post.strip() != "List-Unsubscribe=One-Click":
            one_click = Check(
                "one-click unsubscribe signed",
                False,
                "the digest lacks RFC 8058's List-Unsubscribe and List-Unsubscribe-Post headers",
            )
        elif not signed:
            one_click = Check("one-click unsubscribe signed", False, "the digest is not DKIM-signed")
        elif not all(name in signed for name in ONE_CLICK):
            one_click = Check(
                "one-click unsubscribe signed",
                False,
                "the DKIM signature leaves " + ", ".join(n for n in ONE_CLICK if n not in signed) + " unsigned",
            )
        else:
            one_click = Check(
                "one-click unsubscribe signed",
                True,
                "List-Unsubscribe and List-Unsubscribe-Post are in the DKIM signature's h=",
            )
        return [one_click, postal]

    def _postal_address(self, parsed: EmailMessage) -> Check:
        address = self.settings.site.postal_address.strip()
        if not address:
            return Check("postal address in the footer", False, "[site] postal_address is empty")
        bodies = {
            part.get_content_type(): part.get_content()
            for part in parsed.walk()
            if part.get_content_maintype() == "text"
        }
        missing = [kind for kind, body in bodies.items() if address not in html.unescape(body)]
        if not bodies or missing:
            return Check(
                "postal address in the footer",
                False,
                f"{address!r} is not in the digest's {', '.join(missing) or 'body'} (custom templates?)",
            )
        return Check("postal address in the footer", True, f"{address!r} in {', '.join(sorted(bodies))}")

    def _sample_message(self) -> bytes:
        """A digest as a reader would get it, before signing: one sample article per section, the
        configured templates, the RFC 8058 headers."""
        app, now = self.app, self.app.clock()
        edition = Edition(now.astimezone(self.settings.site.tz).date(), now - timedelta(days=1), now)
        base = self.settings.site.url.rstrip("/")
        articles = [
            Article(
                id=f"doctor:{s.slug}",
                url=f"{base}/",
                section=s.slug,
                title="doctor sample",
                summary_html="<p>sample</p>",
                published=now - timedelta(hours=1),
            )
            for s in app.sections
        ]
        site = app.digest_site
        rendered = app.renderer().render(
            site, edition, pick_sections(app.sections, articles, 1), WeatherBlock(()), web_url=f"{base}/"
        )
        links = sample_links(app)
        return compose(
            site,
            rendered,
            day=edition.day,
            to=PREVIEW_TO,
            msg_id=message_id(site, edition, 0),
            unsubscribe_url=links["unsubscribe"],
            preferences_url=links["preferences"],
            now=now,
        )

    # -- records -----------------------------------------------------------------------------------
    def _records(self) -> None:
        d, domain = self.settings.digest, self.from_domain
        self.records.append(f'{domain}. TXT "v=spf1 <your relay: ip4:ADDRESS or its include:> ~all"')
        if d.dkim_selector:
            d_domain = (d.dkim_domain or domain).lower()
            for selector, env, kind in (
                (d.dkim_selector, d.dkim_key_env, "rsa"),
                (d.dkim_ed25519_selector or f"{d.dkim_selector}-ed25519", d.dkim_ed25519_key_env, "ed25519"),
            ):
                secret = self.settings.secret(env)
                public = _public_key(secret.get_secret_value()) if secret is not None else None
                if public is not None and public[0] == kind:
                    value = f"v=DKIM1; k={kind}; p={public[1]}"
                    self.records.append(f"{selector}._domainkey.{d_domain}. TXT {txt_strings(value)}")
        self.records.append(f'_dmarc.{domain}. TXT "v=DMARC1; p=none; rua=mailto:dmarc@{domain}"')


def _public_key(pem: str) -> tuple[str, str] | None:
    """("rsa" or "ed25519", the base64 ``p=`` value) of a PEM private key, or None."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        return None
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return "rsa", base64.b64encode(der).decode()
    if isinstance(key, ed25519.Ed25519PrivateKey):  # RFC 8463: the raw 32-byte key
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "ed25519", base64.b64encode(raw).decode()
    return None
