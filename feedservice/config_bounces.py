"""The ``[bounces]`` tables of config.toml: the return path (VERP), the intakes (a Maildir, an
IMAP folder, provider webhooks) and the bounce policy's limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from feedservice.config_values import EnvName, MailboxName, ReturnPath, Table, UrlPrefix

__all__ = ["BouncesConfig", "BouncesImapConfig", "WebhooksConfig"]


class SesWebhookConfig(Table):
    """``[bounces.webhooks.ses]``: Amazon SES events through SNS (``POST /webhooks/ses``)."""

    topic_arns: tuple[str, ...] = Field(min_length=1)  # the only topics believed (and confirmed)
    trusted_cert_urls: tuple[UrlPrefix, ...] = ()  # certificates' and SubscribeURLs' prefixes; none: AWS's
    max_age_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)  # older messages are refused as replays


class MailgunWebhookConfig(Table):
    """``[bounces.webhooks.mailgun]``: Mailgun's signed webhooks (``POST /webhooks/mailgun``)."""

    signing_key_env: EnvName = "MAILGUN_WEBHOOK_SIGNING_KEY"
    max_age_seconds: int = Field(default=300, ge=10, le=24 * 3600)


class SendgridWebhookConfig(Table):
    """``[bounces.webhooks.sendgrid]``: SendGrid's signed Event Webhook (``POST /webhooks/sendgrid``)."""

    public_key_env: EnvName = "SENDGRID_WEBHOOK_PUBLIC_KEY"  # the verification key, base64 as SendGrid shows it
    max_age_seconds: int = Field(default=300, ge=10, le=24 * 3600)


class PostmarkWebhookConfig(Table):
    """``[bounces.webhooks.postmark]``: Postmark's webhooks behind HTTP Basic auth (``POST /webhooks/postmark``)."""

    username: str = Field(min_length=1, max_length=200, pattern=r"^[^:\s]+$")  # as in the webhook URL
    password_env: EnvName = "POSTMARK_WEBHOOK_PASSWORD"  # the password itself is never in the file


class WebhooksConfig(Table):
    """``[bounces.webhooks]``: providers that report bounces and complaints over HTTP."""

    max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=10 * 1024 * 1024)
    ses: SesWebhookConfig | None = None
    mailgun: MailgunWebhookConfig | None = None
    sendgrid: SendgridWebhookConfig | None = None
    postmark: PostmarkWebhookConfig | None = None


class BouncesImapConfig(Table):
    """``[bounces.imap]``: an IMAP folder the bounce address's mail is read from (and moved out of)."""

    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)  # default: 993 with tls = "ssl", else 143
    tls: Literal["ssl", "starttls", "none"] = "ssl"
    username: str = Field(min_length=1)
    password_env: EnvName  # the password itself is never in the file
    folder: MailboxName = "INBOX"
    processed_folder: MailboxName = "Processed"  # handled mail is moved here (created when missing)
    ca_file: str | None = None  # a CA certificate to trust instead of the system's (a private server)
    timeout: float = Field(default=30.0, gt=0, le=600)  # seconds each step (login, one fetch, one move) may take
    limit: int = Field(default=1000, ge=1, le=100_000)  # messages read per run; the rest waits for the next

    @property
    def server_port(self) -> int:
        return self.port or (993 if self.tls == "ssl" else 143)


class BouncesConfig(Table):
    """``[bounces]``: where bounce mail comes back, and when a reader is suppressed for it."""

    # The envelope sender: each message goes out as local+<token>@domain (VERP); unset: as today.
    return_path: ReturnPath | None = None
    maildir: str | None = None  # a Maildir the MTA delivers bounce mail into
    imap: BouncesImapConfig | None = None  # an IMAP folder bounce mail is read from
    soft_limit: int = Field(default=3, ge=1, le=100)  # soft bounces that suppress…
    soft_days: int = Field(default=14, ge=1, le=365)  # …within this many days, no delivery between
    check_minutes: int = Field(default=5, ge=1, le=24 * 60)  # how often `run` reads the intakes
    webhooks: WebhooksConfig = WebhooksConfig()  # none configured: /webhooks/* answers 404
