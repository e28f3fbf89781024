"""Feed bytes in any charset → UTF-8 bytes. Pure.

Korean sites often serve EUC-KR/CP949 and sometimes declare the wrong charset or none.
Order: a byte-order mark (definitive), the HTTP charset, the XML declaration, UTF-8,
then detection (charset-normalizer). EUC-KR and its aliases are decoded as CP949, its
superset, so the extension syllables (e.g. 똠, 햏) survive. A candidate is used only when
the bytes decode under it without error.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping

from charset_normalizer import from_bytes

_KOREAN = {
    "euc-kr",
    "euc_kr",
    "euckr",
    "ks_c_5601-1987",
    "ks_c_5601",
    "ksc5601",
    "ksc_5601",
    "korean",
    "x-windows-949",
    "windows-949",
    "cp949",
    "ms949",
    "uhc",
    "x-euc-kr",
}
_LATIN1 = {"iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "iso_8859-1", "cp819"}
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._:-]+)[\"'][^>]*\?>", re.IGNORECASE)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def normalize_charset(name: str | None) -> str | None:
    """A Python codec name for a declared charset; EUC-KR and friends → cp949; unknown → None."""
    if not name:
        return None
    name = name.strip().strip("\"'").lower()
    if name in _KOREAN:
        return "cp949"
    if name in _LATIN1:
        return "cp1252"  # as browsers (WHATWG) and feedparser read it: “smart quotes” in 0x80–0x9F
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _valid_utf8(content: bytes) -> bool:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _declared(content: bytes) -> str | None:
    """The encoding an XML declaration names, as written, if it names one."""
    decl = _XML_DECL.match(content[:512])
    return decl.group(1).decode("ascii") if decl else None


def plainly_utf8(content: bytes, headers: Mapping[str, str] | None = None) -> bool:
    """Bytes that say they are UTF-8, or say nothing, wherever they could say: no byte-order mark,
    no other charset in the HTTP header or the XML declaration. (Whether they really are UTF-8 is
    for the reader to find: lxml fails on bytes that are not.)"""
    if content[:1] != b"<":
        return False
    named = [c for c in (http_charset(headers), _declared(content)) if c is not None]
    return all(normalize_charset(c) == "utf-8" for c in named)


def http_charset(headers: Mapping[str, str] | None) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == "content-type":
            m = re.search(r"charset\s*=\s*([^;\s]+)", value, re.IGNORECASE)
            return m.group(1) if m else None
    return None


_ASCII = bytes(range(128))


def _mostly_utf8(content: bytes, declared: bool) -> bool:
    """Whether bytes that are not valid UTF-8 are UTF-8 with a few bad bytes.

    Legacy Korean text is never close: a CP949 syllable starts with a byte UTF-8 only allows as
    a continuation, so nearly every non-ASCII byte is an error. Declared UTF-8 needs the errors to
    be under 10% of the non-ASCII bytes; undeclared, under 1% of at least 60.
    """
    high = len(content) - len(content.translate(None, _ASCII))
    bad = content.decode("utf-8", errors="replace").count("\ufffd")
    if declared:
        return bad * 10 <= high
    return high >= 60 and bad * 100 <= high


def decode_feed(content: bytes, headers: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(text, the encoding used). Never raises: the last resort decodes CP949 with replacement.

    A document that is UTF-8 by its byte-order mark, its declaration or overwhelming evidence
    but holds a few bad bytes decodes as UTF-8 with just those bytes replaced (one ``\xff``
    made a whole Korean feed decode as CP949 mojibake).
    """
    if content.startswith(codecs.BOM_UTF8):
        return content[len(codecs.BOM_UTF8) :].decode("utf-8", errors="replace"), "utf-8"
    for bom, enc in _BOMS:
        if content.startswith(bom):
            try:
                return content[len(bom) :].decode(enc), enc
            except UnicodeDecodeError:
                break
    decl = _declared(content)
    candidates = [normalize_charset(http_charset(headers)), normalize_charset(decl), "utf-8"]
    for enc in dict.fromkeys(c for c in candidates if c):
        if enc == "cp1252" and _valid_utf8(content):
            enc = "utf-8"  # a server default of Latin-1 over UTF-8 text: real Latin-1 is never valid UTF-8
        try:
            return content.decode(enc), enc
        except (UnicodeDecodeError, LookupError):
            continue
    if _mostly_utf8(content, declared="utf-8" in candidates[:2]):
        return content.decode("utf-8", errors="replace"), "utf-8"
    best = from_bytes(content[:200_000]).best()
    guess = normalize_charset(best.encoding) if best is not None else None
    if guess and guess.replace("_", "-") in ("euc-kr", "johab", "cp949"):
        guess = "cp949"
    for enc in dict.fromkeys(c for c in (guess, "cp949") if c):
        try:
            return content.decode(enc), enc
        except (UnicodeDecodeError, LookupError):
            continue
    return content.decode("cp949", errors="replace"), "cp949"
