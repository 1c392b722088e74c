"""RSA key helpers for the emulator: make test keys, normalise public keys for lookup."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["canonical_public_pem", "generate_private_key_pem"]


def generate_private_key_pem(bits: int = 2048) -> str:
    """Return a fresh, unencrypted RSA private key as PKCS#8 PEM text.

    This is what the ICR dashboard hands an app developer, so tests can feed it to the SDK
    exactly as production code would receive it.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode("ascii")


def canonical_public_pem(pem: str | bytes) -> str:
    """Return the SubjectPublicKeyInfo PEM of an RSA public key (or of a private key's half).

    Keys are stored under this canonical text so ``remove_app_key`` finds a key whatever
    line endings or PEM flavour (PKCS#1, SPKI, or a private key) the caller used.
    """
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    public: object
    try:
        public = serialization.load_pem_public_key(data)
    except ValueError:
        # Accepting the private key too saves tests a conversion step.
        public = serialization.load_pem_private_key(data, password=None).public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        raise ValueError("ICR app keys must be RSA keys")
    return public.public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    ).decode("ascii")
