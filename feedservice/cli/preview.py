"""A digest preview on disk: ``index.html``, ``digest.txt`` and ``digest.eml`` of one edition.

A preview is made to be looked at and passed around, so it holds no reader's links: it once
carried the first subscriber's working unsubscribe token, and forwarding it let anyone
unsubscribe that reader. Its personal links are inert samples that say what they are, and it
goes to an address that cannot exist. ``digest preview`` and the demo both write it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from feedservice.bootstrap import App
from feedservice.model import Edition
from feedservice.services.digest import RenderedDigest, compose, message_id

PREVIEW_TO = "preview@example.invalid"
NOTICE = "the preview's unsubscribe and preferences links are inert samples, not a reader's"


def sample_links(app: App) -> dict[str, str]:
    """Links in the places of a reader's own, that act on nobody (no token) and say so."""
    base = app.settings.site.public_url.rstrip("/")
    return {
        "unsubscribe": f"{base}/unsubscribe/preview-sample-not-a-reader",
        "preferences": f"{base}/preferences/preview-sample-not-a-reader",
    }


@dataclass(frozen=True)
class PreviewFiles:
    html: Path
    text: Path
    eml: Path


def write_preview(app: App, edition: Edition, rendered: RenderedDigest, folder: Path) -> PreviewFiles:
    """Write the three files of ``rendered`` (signed with DKIM when configured) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    links = sample_links(app)
    html, text = rendered.fill(links)
    eml = compose(
        app.digest_site,
        rendered,
        day=edition.day,
        to=PREVIEW_TO,
        msg_id=message_id(app.digest_site, edition, 0),
        unsubscribe_url=links["unsubscribe"],
        preferences_url=links["preferences"],
        now=app.clock(),
    )
    if (signer := app.signer()) is not None:
        eml = signer.sign(eml)
    files = PreviewFiles(folder / "index.html", folder / "digest.txt", folder / "digest.eml")
    files.html.write_text(html, encoding="utf-8")
    files.text.write_text(text, encoding="utf-8")
    files.eml.write_bytes(eml)
    return files
