"""DKIM private keys: loaded and checked once, and the one operation that needs them.

Both algorithms sign the SHA-256 hash of the data (RFC 6376 §3.7: the header data with the
signature header up to ``b=``): RSASSA-PKCS1-v1_5 over SHA-256 (§3.3.1) gives the same signature
whether it is handed the data or its digest (``Prehashed``), and Ed25519-SHA256 is PureEdDSA over
that digest (RFC 8463 §3). So a key signs the 32-byte digest ``DkimSigner`` hands it
(``sign_digests``), and an RSA signature is checked against that digest with the public key
(``RsaKey.verifies``: the signing process checks each one before it answers).
"""

from __future__ import annotations

from typing import ClassVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from feedservice.errors import ConfigError

__all__ = ["MIN_RSA_BITS", "Ed25519Key", "RsaKey", "load_ed25519_key", "load_rsa_key"]

MIN_RSA_BITS = 2048

_PKCS1 = padding.PKCS1v15()
_PREHASHED = utils.Prehashed(hashes.SHA256())


class RsaKey:
    """``a=rsa-sha256``."""

    __slots__ = ("key", "public")
    algorithm: ClassVar[bytes] = b"rsa-sha256"

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self.key, self.public = key, key.public_key()

    def sign(self, digest: bytes) -> bytes:
        """The signature of the data whose SHA-256 is ``digest``."""
        return self.key.sign(digest, _PKCS1, _PREHASHED)

    def verifies(self, signature: bytes, digest: bytes) -> bool:
        """Whether ``signature`` is this key's over ``digest`` (~20 µs: the public-key operation)."""
        try:
            self.public.verify(signature, digest, _PKCS1, _PREHASHED)
        except InvalidSignature:
            return False
        return True

    def pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM: what goes down the signing process's pipe."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


class Ed25519Key:
    """``a=ed25519-sha256`` (RFC 8463)."""

    __slots__ = ("key",)
    algorithm: ClassVar[bytes] = b"ed25519-sha256"

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self.key = key

    def sign(self, digest: bytes) -> bytes:
        return self.key.sign(digest)

    def pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM: what goes down the signing process's pipe."""
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _load(pem: bytes, source: str, config_key: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(source, config_key, f"the DKIM key is not an unencrypted PEM private key: {exc}") from exc


def load_rsa_key(pem: bytes, source: str) -> RsaKey:
    """``[digest] dkim_key_env``'s key: RSA of at least 2048 bits (what Gmail and Naver expect of
    bulk senders), else a ConfigError naming that setting."""
    key = _load(pem, source, "digest.dkim_key_env")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(
            source, "digest.dkim_key_env", f"the DKIM key is a {type(key).__name__}, not an RSA private key"
        )
    if key.key_size < MIN_RSA_BITS:
        raise ConfigError(
            source, "digest.dkim_key_env", f"the DKIM key has {key.key_size} bits; at least {MIN_RSA_BITS} are required"
        )
    return RsaKey(key)


def load_ed25519_key(pem: bytes, source: str) -> Ed25519Key:
    """``[digest] dkim_ed25519_key_env``'s key, else a ConfigError naming that setting."""
    key = _load(pem, source, "digest.dkim_ed25519_key_env")
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(
            source, "digest.dkim_ed25519_key_env", f"the key is a {type(key).__name__}, not an Ed25519 private key"
        )
    return Ed25519Key(key)
