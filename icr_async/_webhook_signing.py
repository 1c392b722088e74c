"""Webhook signatures: HMAC-SHA256 over the ``signedData`` string (or, in legacy mode, the
whole body), checked in constant time, and deliveries signed the way ICR signs them.

The scheme and why only ``signedData`` is trusted are described in :mod:`icr_async.webhooks`.
Nothing here ever puts the secret, the expected digest or the header's text in an error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from .errors import WebhookSignatureError

__all__ = [
    "SIGNATURE_HEADER",
    "as_bytes",
    "check_digest",
    "parse_signature_header",
    "secret_bytes",
    "sign_payload",
    "verify_signature",
]

SIGNATURE_HEADER: Final = "x-icr-signature-256"
"""The request header carrying ``sha256=<hex>``."""

_SIGNATURE_RE: Final = re.compile(r"[0-9a-fA-F]{64}")


def secret_bytes(secret: str | bytes) -> bytes:
    """The webhook secret as bytes (UTF-8 for ``str``); ``ValueError`` when it is empty."""
    if isinstance(secret, str):
        key = secret.encode("utf-8")
    elif isinstance(secret, (bytes, bytearray, memoryview)):
        key = bytes(secret)
    else:
        raise TypeError(f"the webhook secret must be str or bytes, not {type(secret).__name__}")
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def as_bytes(data: str | bytes) -> bytes:
    """``data`` as bytes (UTF-8 for ``str``); ``TypeError`` for anything else."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"expected str or bytes, not {type(data).__name__}")


def parse_signature_header(header: str | None) -> bytes:
    """The 32-byte digest in ``sha256=<hex>``; the header's text is never echoed back."""
    if header is None or not header.strip():
        raise WebhookSignatureError(f"missing {SIGNATURE_HEADER} header")
    scheme, sep, digest = header.strip().partition("=")
    if not sep or scheme.strip().lower() != "sha256":
        raise WebhookSignatureError("unsupported signature scheme: expected 'sha256=<hex>'")
    digest = digest.strip()
    if not _SIGNATURE_RE.fullmatch(digest):
        raise WebhookSignatureError("malformed signature: expected 64 hexadecimal digits")
    return bytes.fromhex(digest)


def check_digest(data: bytes, provided: bytes, key: bytes) -> None:
    """Raise :class:`WebhookSignatureError` unless ``provided`` is HMAC-SHA256(key, data)."""
    expected = hmac.new(key, data, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, provided):
        raise WebhookSignatureError("signature mismatch")


def _sign(data: bytes, key: bytes) -> str:
    return "sha256=" + hmac.new(key, data, hashlib.sha256).hexdigest()


def verify_signature(
    signed_data: str | bytes, signature_header: str | None, secret: str | bytes
) -> None:
    """Check ``signature_header`` (``sha256=<hex>``) against HMAC-SHA256(secret, signed_data).

    ``signed_data`` is the ``signedData`` string (or, in legacy mode, the raw body); a ``str`` is
    taken as its UTF-8 bytes. Hex digits may be in either case and surrounding whitespace is
    ignored. The comparison runs in constant time.

    Raises :class:`WebhookSignatureError` when the header is missing, uses another scheme, is
    not 64 hex digits, or does not match; ``ValueError`` for an empty secret.
    """
    key = secret_bytes(secret)
    provided = parse_signature_header(signature_header)
    check_digest(as_bytes(signed_data), provided, key)


def sign_payload(
    payload: Mapping[str, Any], secret: str | bytes, *, legacy_whole_body: bool = False
) -> tuple[bytes, dict[str, str]]:
    """Build a webhook delivery as ICR sends it: ``(body bytes, headers)``.

    The body is ``payload``'s fields plus ``signedData`` = base64(JSON of ``payload``); the
    headers are ``content-type`` and :data:`SIGNATURE_HEADER`, signed over ``signedData`` (or
    over the whole body with ``legacy_whole_body=True``). For the emulator and for tests of
    your own webhook endpoint.
    """
    key = secret_bytes(secret)
    if "signedData" in payload:
        raise ValueError("the payload must not already contain 'signedData'")
    payload_json = json.dumps(dict(payload), separators=(",", ":"), ensure_ascii=False)
    signed_data = base64.b64encode(payload_json.encode("utf-8")).decode("ascii")
    body = json.dumps(
        {**payload, "signedData": signed_data}, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    signature = _sign(body if legacy_whole_body else signed_data.encode("ascii"), key)
    headers = {"content-type": "application/json", SIGNATURE_HEADER: signature}
    return body, headers
