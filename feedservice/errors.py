"""Exceptions raised by feedservice.

    FeedServiceError
    ├── ConfigError          bad or missing configuration (exit status 2)
    ├── StorageError         the database failed or refused
    ├── FetchError           a source could not be fetched (carries the URL)
    ├── ParseError           fetched bytes are not a usable feed (carries the URL)
    ├── WeatherError         a weather provider failed (carries the provider)
    ├── TemplateError        a digest template is broken (carries its name and line)
    ├── IntakeError          a bounce intake (Maildir, IMAP) cannot be read (carries its name)
    ├── WebhookRefused       a provider's webhook call not believed or not understood (carries
    │                        the HTTP status and the one word answered)
    └── DeliveryError        a message could not be handed over (about its recipient)
        └── SendingStopped   about us, not the recipient (connect, EHLO, STARTTLS, AUTH, MAIL
            │                FROM): the run stops; a temporary one is retried by a later run
            └── DeliveryFatal    permanent: the run stops until the setup is fixed

Adapters turn library exceptions into these at their boundary and chain the cause.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping


class FeedServiceError(Exception):
    """Base class of every error feedservice raises on purpose."""


class ConfigError(FeedServiceError):
    def __init__(self, path: str, key: str, message: str) -> None:
        self.path, self.key, self.message = path, key, message
        super().__init__(f"{path}: {key}: {message}" if key else f"{path}: {message}")

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str, str]]:  # pickles across process pools
        return (type(self), (self.path, self.key, self.message))


class StorageError(FeedServiceError):
    pass


class FetchError(FeedServiceError):
    def __init__(self, url: str, message: str, *, retry_after: float | None = None, gone: bool = False):
        self.url, self.message, self.retry_after, self.gone = url, message, retry_after, gone
        super().__init__(f"{url}: {message}")

    def __reduce__(self) -> tuple[Callable[..., FetchError], tuple[str, str, float | None, bool]]:
        return (_rebuild_fetch_error, (self.url, self.message, self.retry_after, self.gone))


class ParseError(FeedServiceError):
    def __init__(self, url: str, message: str) -> None:
        self.url, self.message = url, message
        super().__init__(f"{url}: {message}")

    def __reduce__(self) -> tuple[type[ParseError], tuple[str, str]]:
        return (type(self), (self.url, self.message))


class WeatherError(FeedServiceError):
    def __init__(self, provider: str, message: str) -> None:
        self.provider, self.message = provider, message
        super().__init__(f"weather provider {provider}: {message}")

    def __reduce__(self) -> tuple[type[WeatherError], tuple[str, str]]:
        return (type(self), (self.provider, self.message))


class TemplateError(FeedServiceError):
    def __init__(self, name: str, line: int | None, message: str) -> None:
        self.name, self.line, self.message = name, line, message
        where = f"{name}:{line}" if line else name
        super().__init__(f"template {where}: {message}")


class DeliveryError(FeedServiceError):
    """One message could not be handed over; ``enhanced`` is the RFC 3463 code ("5.1.1") if given."""

    def __init__(
        self, message: str, *, code: int | None = None, permanent: bool = False, enhanced: str | None = None
    ) -> None:
        self.code, self.permanent, self.enhanced = code, permanent, enhanced
        super().__init__(message)


class SendingStopped(DeliveryError):
    """Not about one recipient: the relay refuses or cannot take mail from us right now.

    No reader is marked for it (never suppressed): the run stops and hands its claims back.
    """


class DeliveryFatal(SendingStopped):
    """Permanent and about us (authentication, TLS, the sender address refused): stop the run."""

    def __init__(self, message: str, *, code: int | None = None, enhanced: str | None = None) -> None:
        super().__init__(message, code=code, permanent=True, enhanced=enhanced)


def _rebuild_fetch_error(url: str, message: str, retry_after: float | None, gone: bool) -> FetchError:
    return FetchError(url, message, retry_after=retry_after, gone=gone)


class IntakeError(FeedServiceError):
    def __init__(self, intake: str, message: str) -> None:
        self.intake, self.message = intake, message
        super().__init__(f"{intake}: {message}")


class WebhookRefused(FeedServiceError):
    """A provider's call (``POST /webhooks/{provider}``) that is not applied: ``status`` and ``word``
    are all the caller is told (403 "refused", 400 "bad request", …), with ``headers`` (a 401's
    ``WWW-Authenticate``); the reason goes to the log."""

    def __init__(self, status: int, word: str, reason: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.word = status, word
        self.headers: dict[str, str] = dict(headers or {})
