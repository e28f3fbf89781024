"""Mail addresses as they travel: the domain in IDNA A-labels, the local part as given.

An address whose only non-ASCII part is its domain (``ok@bücher.de``) can go through any relay
as plain ASCII (``ok@xn--bcher-kva.de``); a non-ASCII local part (``사용자@example.com``) needs
SMTPUTF8 on the envelope (RFC 6531) and raw UTF-8 in the headers (RFC 6532). Everything that
puts an address on the wire or in a header goes through ``wire_address``, so no code path can
hand a relay (or the ``email`` folder) an address in a form it cannot carry.
"""

from __future__ import annotations

from email.headerregistry import Address
from email.utils import parseaddr

import idna


def ascii_domain(domain: str) -> str:
    """``bücher.de`` → ``xn--bcher-kva.de`` (IDNA 2008 with UTS #46 mapping); ASCII stays as is.

    Raises ``ValueError`` for a domain that has no IDNA form.
    """
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"the domain {domain!r} has no IDNA form: {exc}") from exc


def wire_address(address: str) -> str:
    """The address with its domain in A-labels; the local part is left as it is (maybe UTF-8)."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    return f"{local}@{ascii_domain(domain)}"


def wire_mailbox(value: str) -> str:
    """``Name <local@domäin>`` → ``Name <local@xn--domin-kva>``: the display name untouched (it is
    encoded where a header is written), the address as ``wire_address`` makes it."""
    name, addr = parseaddr(value)
    if not addr:
        return value
    addr = wire_address(addr)
    if not name:
        return addr
    local, _, domain = addr.rpartition("@")
    return str(Address(display_name=name, username=local, domain=domain))
