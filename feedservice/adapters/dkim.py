"""DKIM signing with dkimpy, covering the headers a provider checks for one-click unsubscribe.

RFC 8058 §4: the signature must cover List-Unsubscribe and List-Unsubscribe-Post, or a
provider will not offer one-click unsubscribe. Relaxed canonicalisation keeps the signature
valid across the header folding relays may do.
"""

from __future__ import annotations

import dkim

from feedservice.errors import ConfigError

SIGNED_HEADERS = (
    b"from", b"to", b"subject", b"date", b"message-id", b"list-id", b"list-unsubscribe",
    b"list-unsubscribe-post", b"mime-version", b"content-type",
)  # fmt: skip


class DkimSigner:
    def __init__(self, *, selector: str, domain: str, private_key_pem: bytes, source: str = "config") -> None:
        self.selector, self.domain, self._key = selector.encode(), domain.encode(), private_key_pem
        try:  # fail at start-up, not on the first message
            self.sign(b"From: a@" + self.domain + b"\r\nTo: b@example.com\r\nSubject: x\r\n\r\nx\r\n")
        except dkim.DKIMException as exc:
            raise ConfigError(source, "digest.dkim_key_env", f"the DKIM key cannot sign: {exc}") from None

    def sign(self, message: bytes) -> bytes:
        signature: bytes = dkim.sign(
            message,
            self.selector,
            self.domain,
            self._key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
        )
        return signature + message
