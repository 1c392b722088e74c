"""Signers: whatever makes the RS256 signature of the app JWT.

The SDK builds the JWT itself (header, claims, encoding) and hands only the bytes to sign to
a :class:`Signer`, so the private key can live where it can only be used for signing: a
PKCS#11 token (``icr_async.contrib.pkcs11``), a cloud KMS, or, as before, a PEM loaded into
the process (:class:`~icr_async.PrivateKey` is a signer too).

A signer is asked once per JWT lifetime (about every seven to eight minutes), never per
request. What comes back is checked before it is used: bytes, the size of the modulus, and
(for signers other than ``PrivateKey``) a real RSASSA-PKCS1-v1_5/SHA-256 verification with
the signer's own public key, so a KMS key configured for PSS or a token that picked the
wrong key object is reported here, naming the signer, rather than as "Invalid JWT
signature" from the server.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .errors import ConfigurationError, SignerError

__all__ = [
    "MIN_RSA_BITS",
    "Signer",
    "check_signers",
    "describe_signer",
    "public_key_fingerprint",
    "sign_checked",
]

MIN_RSA_BITS = 2048


@runtime_checkable
class Signer(Protocol):
    """Makes RS256 signatures for the app JWT with a key the SDK never sees.

    Implement the four members below and pass the object as
    ``AsyncICRClient(app_id, signer=...)``; :class:`~icr_async.PrivateKey` and
    ``icr_async.contrib.pkcs11.PKCS11Signer`` are two implementations. Plain attributes are
    fine where properties are shown.
    """

    @property
    def key_id(self) -> str:
        """A short, non-secret name for the key, shown in logs and errors (a PKCS#11 URI
        without its PIN, a KMS key name). Never put a secret in it."""
        ...

    @property
    def fingerprint(self) -> str:
        """base64(SHA-256(DER SubjectPublicKeyInfo)) of :attr:`public_key`; see
        :func:`public_key_fingerprint`."""
        ...

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The RSA public key (at least 2048 bits) matching the private key that signs."""
        ...

    async def sign(self, signing_input: bytes) -> bytes:
        """RS256: the RSASSA-PKCS1-v1_5 signature over SHA-256 of ``signing_input``.

        ``signing_input`` is the ASCII ``header.claims`` part of the JWT. A blocking signer
        (an HSM library, a synchronous KMS client) must run its call in a worker thread
        (``asyncio.to_thread``): this coroutine runs on the client's event loop.
        """
        ...


def public_key_fingerprint(public_key: rsa.RSAPublicKey) -> str:
    """base64(SHA-256(DER SubjectPublicKeyInfo)): the fingerprint ``PrivateKey`` reports.

    ICR's exact fingerprint format is not documented; this is the GitHub-style one.
    """
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")


def describe_signer(signer: Signer) -> str:
    """How logs and errors name a signer: its ``key_id`` and the key's fingerprint."""
    key_id, fingerprint = signer.key_id, signer.fingerprint
    if not key_id or fingerprint in key_id:
        return key_id or f"SHA256:{fingerprint}"
    return f"{key_id} (SHA256:{fingerprint})"


def _check_signer(obj: object) -> Signer:
    if not isinstance(obj, Signer):
        raise ConfigurationError(
            "signer must implement icr_async.Signer (key_id, fingerprint, public_key and "
            f"async sign()); got {type(obj).__name__}"
        )
    key_id = obj.key_id
    if not isinstance(key_id, str):
        raise ConfigurationError(f"a signer's key_id must be a string, not {type(key_id).__name__}")
    public_key = obj.public_key
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ConfigurationError(
            f"ICR app keys are RSA (RS256); signer {key_id!r} has a "
            f"{type(public_key).__name__.lstrip('_')} public key"
        )
    if public_key.key_size < MIN_RSA_BITS:
        raise ConfigurationError(
            f"signer {key_id!r} has a {public_key.key_size}-bit RSA key; ICR needs at least "
            f"{MIN_RSA_BITS}"
        )
    expected = public_key_fingerprint(public_key)
    if obj.fingerprint != expected:
        raise ConfigurationError(
            f"signer {key_id!r} reports fingerprint {obj.fingerprint!r}, but its public key's "
            f"is {expected!r} (base64 SHA-256 of the DER SubjectPublicKeyInfo)"
        )
    if not inspect.iscoroutinefunction(obj.sign):
        raise ConfigurationError(
            f"signer {key_id!r}: sign() must be a coroutine function (async def); run a "
            "blocking call inside it with asyncio.to_thread"
        )
    return obj


def check_signers(value: Signer | Sequence[Signer]) -> tuple[Signer, ...]:
    """Validate ``signer=``: one signer, or an ordered sequence (the first is used first)."""
    if isinstance(value, (str, bytes, bytearray)):
        raise ConfigurationError(
            "signer= takes a Signer (e.g. a PrivateKey) or a list of them; pass PEM text "
            "as private_key="
        )
    items: tuple[object, ...] = tuple(value) if isinstance(value, Sequence) else (value,)
    if not items:
        raise ConfigurationError("signer= is an empty list: give at least one signer")
    signers = tuple(_check_signer(item) for item in items)
    seen: set[str] = set()
    for signer in signers:
        if signer.fingerprint in seen:
            raise ConfigurationError(
                f"signer= lists the key SHA256:{signer.fingerprint} twice; a rotation list "
                "names each key once"
            )
        seen.add(signer.fingerprint)
    return signers


def _retrieve(task: asyncio.Task[bytes]) -> None:
    # A signer abandoned after a timeout may still fail later: nobody awaits it, so mark its
    # exception as retrieved rather than have the loop report it.
    if not task.cancelled():
        task.exception()


async def sign_checked(
    signer: Signer, signing_input: bytes, *, timeout: float | None, verify: bool
) -> bytes:
    """Ask ``signer`` for a signature and check it; every failure is a ``SignerError``.

    ``verify`` checks the signature with the signer's public key (~40 µs, once per JWT);
    it is skipped only for a local ``PrivateKey``, whose signature cannot be wrong.
    """
    name = describe_signer(signer)
    ids = {"key_id": signer.key_id, "fingerprint": signer.fingerprint}
    # A task, not wait_for: a TimeoutError raised by the signer itself must stay its own
    # error, and only asyncio.wait tells "our deadline passed" apart on Python 3.10.
    task = asyncio.ensure_future(signer.sign(signing_input))
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_retrieve)
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_retrieve)
        raise SignerError(
            f"the signer {name} did not return a signature within {timeout:g} s", **ids
        )
    try:
        signature = task.result()
    except asyncio.CancelledError:
        raise SignerError(f"the signer {name} was cancelled while signing", **ids) from None
    except Exception as exc:
        raise SignerError(
            f"the signer {name} failed to sign the app JWT ({type(exc).__name__}; the "
            "signer's error is the __cause__)",
            **ids,
        ) from exc
    if not isinstance(signature, (bytes, bytearray, memoryview)):
        raise SignerError(
            f"the signer {name} returned {type(signature).__name__}, not the signature bytes",
            **ids,
        )
    signature = bytes(signature)
    public_key = signer.public_key
    size = (public_key.key_size + 7) // 8
    if len(signature) != size:
        raise SignerError(
            f"the signer {name} returned a {len(signature)}-byte signature; RS256 with its "
            f"{public_key.key_size}-bit key gives {size} bytes",
            **ids,
        )
    if verify:
        try:
            public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise SignerError(
                f"the signature from {name} does not verify with its public key: it signed "
                "with another key or another scheme (RS256 is RSASSA-PKCS1-v1_5 over the "
                "SHA-256 of the input; a KMS wants RSASSA_PKCS1_V1_5_SHA_256)",
                **ids,
            ) from None
    return signature
