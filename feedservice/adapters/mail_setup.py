"""The configured mailer (``[delivery]``: SMTP, or a Maildir) and DKIM signer (``[digest] dkim_*``;
for sending runs, where it signs: ``[delivery] dkim_signer``), built from config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from feedservice.adapters.dkim import DkimSigner, LoopSigner
from feedservice.adapters.dkim_process import ProcessSigner
from feedservice.adapters.maildir import MaildirMailer
from feedservice.config import DeliveryConfig, DigestConfig
from feedservice.errors import ConfigError
from feedservice.ports import Mailer, RunSigner

__all__ = ["configured_mailer", "configured_run_signer", "configured_signer"]

Secrets = Callable[[str | None], SecretStr | None]  # None: no such setting, no secret


def configured_mailer(d: DeliveryConfig, secret: Secrets, path: Callable[[str], Path]) -> Mailer:
    """The SMTP relay when ``mode`` is smtp, else the Maildir; ``secret`` reads an environment
    variable (or its file), ``path`` resolves a configured path against the config file's folder."""
    if d.effective_mode == "smtp" and d.smtp is not None:
        from feedservice.adapters.smtp import SmtpMailer  # aiosmtplib: ~0.1 s of CPU, for SMTP runs only

        return SmtpMailer(
            d.smtp.host,
            d.smtp.port,
            tls=d.smtp.tls,
            username=d.smtp.username,
            password=secret(d.smtp.password_env),
            timeout=d.smtp.timeout,
            pool_size=d.smtp.pool_size,
            messages_per_connection=d.smtp.messages_per_connection,
        )
    return MaildirMailer(path(d.maildir))


def configured_signer(d: DigestConfig, secret: Secrets, source: str, sender_domain: str) -> DkimSigner | None:
    """DKIM signing when ``dkim_selector`` is set (the key from ``dkim_key_env``), at ``dkim_domain``
    or the sender's; ``ConfigError`` (naming ``source``, the config file) when a key is missing."""
    if not d.dkim_selector:
        return None
    key = secret(d.dkim_key_env)
    if not key:
        why = f"dkim_selector is set but the environment variable {d.dkim_key_env} is empty"
        raise ConfigError(source, "digest.dkim_key_env", why)
    ed25519 = secret(d.dkim_ed25519_key_env)
    if d.dkim_ed25519_key_env and not ed25519:
        why = f"the environment variable {d.dkim_ed25519_key_env} is empty"
        raise ConfigError(source, "digest.dkim_ed25519_key_env", why)
    return DkimSigner(
        selector=d.dkim_selector,
        domain=d.dkim_domain or sender_domain,
        private_key_pem=key.get_secret_value().encode(),
        source=source,
        ed25519_selector=d.dkim_ed25519_selector,
        ed25519_key_pem=ed25519.get_secret_value().encode() if ed25519 else None,
    )


def configured_run_signer(
    delivery: DeliveryConfig, d: DigestConfig, secret: Secrets, source: str, sender_domain: str
) -> RunSigner | None:
    """A sending run's signer (``configured_signer``'s keys): signing in a signing process
    (``[delivery] dkim_signer = "process"``) or on the event loop (``"loop"``); None when nothing
    is signed."""
    signer = configured_signer(d, secret, source, sender_domain)
    if signer is None:
        return None
    return ProcessSigner(signer) if delivery.dkim_signer == "process" else LoopSigner(signer)
