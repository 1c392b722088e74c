"""Loading and checking the app's RSA private key, once.

Parsing and validating a PEM costs ~37 ms on these machines, so a key is loaded exactly once
per client and the parsed object is reused for every JWT. Every way a key can be wrong is
reported here, at construction, with an error that says what to do about it — and never
with the key's text in it.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from joserfc.jwk import RSAKey

from ._signers import MIN_RSA_BITS, public_key_fingerprint
from .errors import ConfigurationError

__all__ = ["MIN_RSA_BITS", "PrivateKey", "load_private_key"]


class PrivateKey:
    """A validated RSA private key, ready to sign RS256 JWTs: the in-process :class:`Signer`.

    Build one with :meth:`from_pem` or :meth:`from_path`; the text of the key is never kept
    and never shown: ``repr`` gives only the size and the public fingerprint. To keep the key
    out of the process altogether, use another signer (``icr_async.contrib.pkcs11``, a KMS).
    """

    __slots__ = ("_fingerprint", "_jwk", "_private", "_public", "bits")

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigurationError(
                f"ICR app keys are RSA (RS256); got a {type(key).__name__.lstrip('_')} key"
            )
        if key.key_size < MIN_RSA_BITS:
            raise ConfigurationError(
                f"RSA key is {key.key_size} bits; ICR needs at least {MIN_RSA_BITS}. "
                "Generate a new key pair on the app dashboard"
            )
        self.bits: int = key.key_size
        self._private = key
        self._public = key.public_key()
        self._fingerprint = public_key_fingerprint(self._public)
        # joserfc < 1.1 only imports serialized keys, so hand it PKCS#8 DER (never stored).
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._jwk = RSAKey.import_key(der)

    @classmethod
    def from_pem(cls, pem: str | bytes, *, password: str | bytes | None = None) -> PrivateKey:
        """Parse PEM text (PKCS#1 or PKCS#8, optionally encrypted with ``password``).

        Environment variables often carry the PEM with literal ``\\n``: those are accepted.
        """
        data = pem.encode("utf-8") if isinstance(pem, str) else bytes(pem)
        data = data.strip()
        if b"\\n" in data and b"\n" not in data:
            data = data.replace(b"\\n", b"\n")
        if not data:
            raise ConfigurationError("the private key is empty")
        if b"-----BEGIN" not in data:
            raise ConfigurationError(
                "the private key is not PEM text (no '-----BEGIN' line); pass the PEM contents, "
                "or a file path with private_key_path="
            )
        if b"PUBLIC KEY" in data and b"PRIVATE KEY" not in data:
            raise ConfigurationError("this is a public key; ICR apps sign with the private key")
        pw = password.encode("utf-8") if isinstance(password, str) else password
        try:
            key = serialization.load_pem_private_key(data, password=pw)
        except TypeError as exc:
            # cryptography says TypeError for both "encrypted, no password" and the reverse.
            if pw is None:
                raise ConfigurationError(
                    "the private key is encrypted; pass private_key_password="
                ) from None
            raise ConfigurationError(
                "a private_key_password was given but the key is not encrypted"
            ) from exc
        except ValueError:
            if pw is not None:
                raise ConfigurationError(
                    "could not decrypt the private key: wrong private_key_password, or malformed PEM"
                ) from None
            raise ConfigurationError(
                "could not parse the private key PEM (malformed or truncated)"
            ) from None
        except Exception:  # pragma: no cover - cryptography's UnsupportedAlgorithm and kin
            raise ConfigurationError("unsupported private key format") from None
        return cls(key)  # type: ignore[arg-type]  # checked in __init__

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str], *, password: str | bytes | None = None
    ) -> PrivateKey:
        """Read and parse a PEM file."""
        p = Path(path)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise ConfigurationError(f"private key file not found: {p}") from None
        except OSError as exc:
            raise ConfigurationError(f"cannot read private key file {p}: {exc.strerror}") from None
        return cls.from_pem(data, password=password)

    @property
    def fingerprint(self) -> str:
        """base64(SHA-256(DER SubjectPublicKeyInfo)), the form GitHub-style dashboards show.

        ICR's exact fingerprint format is not documented; this is the inferred one.
        """
        return self._fingerprint

    @property
    def jwk(self) -> RSAKey:
        """The key as a joserfc JWK, for signing."""
        return self._jwk  # type: ignore[no-any-return]  # joserfc types import_key loosely

    @property
    def key_id(self) -> str:
        """``SHA256:`` and the fingerprint: how logs and errors name this key."""
        return f"SHA256:{self._fingerprint}"

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The public half (what the app dashboard holds)."""
        return self._public

    def sign_now(self, signing_input: bytes) -> bytes:
        """RS256 (RSASSA-PKCS1-v1_5, SHA-256) signature of ``signing_input``, synchronously.

        ~0.3 ms for 2048 bits: the client calls this inline, once per JWT lifetime.
        """
        return self._private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())

    async def sign(self, signing_input: bytes) -> bytes:
        """The :class:`Signer` method: :meth:`sign_now`, which never blocks for long."""
        return self.sign_now(signing_input)

    def __repr__(self) -> str:
        return f"<PrivateKey RSA-{self.bits} SHA256:{self._fingerprint}>"

    def __reduce__(self) -> str | tuple[Any, ...]:
        # Pickling would put the key material in a byte string that ends up in caches and
        # logs of multiprocessing; refuse it loudly.
        raise TypeError("PrivateKey cannot be pickled; load it from its source in each process")


KeySource = typing.Union[str, bytes, "os.PathLike[str]", PrivateKey]
"""Anything ``load_private_key`` accepts as the key itself."""


def load_private_key(
    private_key: KeySource | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    password: str | bytes | None = None,
    env: bool = True,
) -> PrivateKey:
    """Load the app key from PEM text/bytes, a path, or the environment.

    Order: ``private_key`` (PEM text/bytes, a ``PrivateKey``, or a ``pathlib.Path``), then
    ``path``, then ``ICR_PRIVATE_KEY`` (PEM text) and ``ICR_PRIVATE_KEY_PATH`` when ``env``.
    """
    if private_key is not None and path is not None:
        raise ConfigurationError("pass either private_key or private_key_path, not both")
    if isinstance(private_key, PrivateKey):
        return private_key
    if isinstance(private_key, os.PathLike):
        return PrivateKey.from_path(private_key, password=password)
    if isinstance(private_key, (str, bytes, bytearray)):
        return PrivateKey.from_pem(private_key, password=password)
    if private_key is not None:
        raise ConfigurationError(
            f"private_key must be PEM text, bytes, a path or a PrivateKey, not {type(private_key).__name__}"
        )
    if path is not None:
        return PrivateKey.from_path(path, password=password)
    if env:
        pem = os.environ.get("ICR_PRIVATE_KEY")
        if pem:
            return PrivateKey.from_pem(pem, password=password)
        env_path = os.environ.get("ICR_PRIVATE_KEY_PATH")
        if env_path:
            return PrivateKey.from_path(env_path, password=password)
    raise ConfigurationError(
        "no private key: pass private_key= (PEM) or private_key_path=, or set ICR_PRIVATE_KEY "
        "or ICR_PRIVATE_KEY_PATH"
    )
