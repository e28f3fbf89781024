"""What DKIM signing costs the sending loop: its CPU a message through the signing process, and signing itself.

    .venv/bin/python bench/dkim_handoff.py [--n 8000] [--batch 1 4 16]

Signs N digest-sized messages (a 2048-bit RSA key, the body in template pieces) through
``ProcessSigner``, ``batch`` at a time in one loop iteration, and measures this process's CPU
time (the child's is not in it): encoding the batch, its write, taking the answer, the futures,
and the comparison of one answer in ``CHECK_EVERY`` with the loop's own signing. Then the same
messages signed on the loop (``DkimSigner.sign_parts``: canonicalisation, hashes, RSA), which is
what the signing process saves the loop, less that.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from feedservice import aio
from feedservice.adapters.dkim import DkimSigner
from feedservice.adapters.dkim_process import START_AFTER, ProcessSigner

HEAD = (
    "From: 뉴스스페이스 <newsletter@newsspace.kr>\r\nTo: reader{i}@example.com\r\nSubject: 뉴스스페이스 아침 브리핑\r\n"
    "Date: Mon, 30 Nov 2026 07:00:00 +0900\r\nMessage-ID: <{i}@newsspace.kr>\r\nList-Id: <news.newsspace.kr>\r\n"
    "List-Unsubscribe: <https://f.kr/unsubscribe/{i}.token>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
)
SEGMENT = ("<tr>\r\n  <td>    오늘의 주요 소식을 전합니다.    </td>\r\n</tr>\r\n" * 30).encode()


def _parts(i: int) -> tuple[bytes, list[bytes]]:
    link = f"https://f.kr/unsubscribe/{i}.token".encode()
    return HEAD.format(i=i).encode(), [SEGMENT, link, SEGMENT, link, SEGMENT]


async def _through_process(dkim: DkimSigner, n: int, batch: int) -> tuple[float, int]:
    signer = ProcessSigner(dkim)
    for i in range(START_AFTER):  # the last of them starts the child
        await signer.sign_parts(*_parts(i))
    while signer.state == "starting":
        await asyncio.sleep(0.01)
    cpu = time.process_time()
    for r in range(n // batch):
        await asyncio.gather(*(signer.sign_parts(*_parts(r * batch + i)) for i in range(batch)))
    cpu = time.process_time() - cpu
    await signer.aclose()
    return cpu, signer.signed


def _on_the_loop(dkim: DkimSigner, n: int) -> float:
    cpu = time.process_time()
    for i in range(n):
        dkim.sign_parts(*_parts(i))
    return time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8000)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16])
    args = ap.parse_args()
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    dkim = DkimSigner(selector="bench", domain="newsspace.kr", private_key_pem=pem)
    here = _on_the_loop(dkim, args.n) / args.n * 1e6
    print(f"signed on the loop: {here:4.0f} µs of this process's CPU a message")
    for batch in args.batch:
        cpu, signed = aio.run(_through_process(dkim, args.n, batch))
        assert signed == args.n // batch * batch, "the signing process did not sign them all"
        print(f"signing process, batch {batch:>2}: {cpu / args.n * 1e6:4.0f} µs of this process's CPU a message")


if __name__ == "__main__":
    main()
