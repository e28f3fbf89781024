"""OpenDKIM (libopendkim, C) as a second DKIM verifier beside dkimpy: what relays running the
OpenDKIM milter report for our signatures, offline.

``opendkim -t FILE,FILE,...`` is the milter's documented test mode (opendkim(8)): it verifies each
message as the milter would and prints the Authentication-Results field it would add. The
configuration names ``TestPublicKeys`` (opendkim.conf(5)), a file of ``selector._domainkey.domain
TXT-record`` lines, so no DNS is asked; ``MustBeSigned`` makes a signature that leaves From,
List-Unsubscribe or List-Unsubscribe-Post uncovered (where present) fail, as a receiver insisting
on RFC 8058's one-click headers would. ``opendkim-testmsg`` (opendkim-tools) cannot be given a key:
it always asks DNS.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import skip_unless_ci

MUST_BE_SIGNED = ("From", "List-Unsubscribe", "List-Unsubscribe-Post")
_RESULT = re.compile(r'dkim=(\w+)(?: reason="([^"]*)")?[^;]*?header\.a=(\S+) header\.s=(\S+)')


@dataclass(frozen=True)
class Verdict:
    """One signature's result, as OpenDKIM's Authentication-Results field gives it."""

    result: str  # pass, fail, neutral, permerror, ...
    reason: str  # why not pass ("signature verification failed", "unprotected header field"), or ""
    algorithm: str  # rsa-sha256, ed25519-sha256
    selector: str


def opendkim_or_skip() -> str:
    """The OpenDKIM milter's binary; skips where it is not installed (CI installs it and requires it)."""
    found = shutil.which("opendkim") or shutil.which("opendkim", path="/usr/sbin:/usr/local/sbin")
    if not found:
        skip_unless_ci("OpenDKIM is not installed (.ci/run installs it; or: apt-get install opendkim)")
    return found


class OpenDkim:
    """Verifies messages with OpenDKIM against the public keys of ``records`` ({selector: TXT record})."""

    def __init__(self, folder: Path, domain: str, records: dict[str, bytes]) -> None:
        self.binary = opendkim_or_skip()
        self.folder = folder
        keys = folder / "public-keys"
        keys.write_bytes(b"".join(f"{s}._domainkey.{domain} ".encode() + r + b"\n" for s, r in records.items()))
        self.config = folder / "opendkim.conf"
        self.config.write_text(
            f"TestPublicKeys {keys}\nMustBeSigned {','.join(MUST_BE_SIGNED)}\nSyslog no\n", encoding="utf-8"
        )

    def verify(self, messages: Sequence[bytes]) -> list[list[Verdict]]:
        """Per message, one verdict per DKIM signature, top first; an empty list where OpenDKIM
        found none it could read (see ``summary``). All messages in one ``opendkim`` run."""
        names = []
        for i, message in enumerate(messages):
            path = self.folder / f"message-{i}.eml"
            path.write_bytes(message)
            names.append(str(path))
        done = subprocess.run(
            [self.binary, "-x", str(self.config), "-vv", "-t", ",".join(names)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        # One "### INSHEADER: ... hvalue='<Authentication-Results>'" per message, in order.
        fields = [re.sub(r"\s+", " ", f) for f in done.stdout.split("### INSHEADER")[1:]]
        assert done.returncode == 0 and len(fields) == len(messages), (done.returncode, done.stdout, done.stderr)
        self.fields = fields
        return [[Verdict(m[1], m[2] or "", m[3], m[4]) for m in _RESULT.finditer(field)] for field in fields]

    def summary(self, i: int) -> str:
        """The Authentication-Results value OpenDKIM gave the ``i``-th message of the last ``verify``."""
        return self.fields[i].split("hvalue=", 1)[-1]
