"""Masking secrets before they reach a repr, a log record or an exception message.

Why a module of its own: errors, models, logs and hooks all need the same rules, and a rule
written twice drifts. Tokens are shown as ``crs_…9c5b`` (enough to tell two apart in a log,
useless to an attacker); anything that looks like a JWT is replaced whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_TOKEN_RE = re.compile(r"crs_[0-9A-Za-z]{8,}")
# Three base64url segments, the first starting like a JSON object ("eyJ" = '{"').
_JWT_RE = re.compile(r"eyJ[0-9A-Za-z_-]{5,}\.[0-9A-Za-z_-]{5,}\.[0-9A-Za-z_-]*")
_PEM_RE = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S
)
_BEARER_RE = re.compile(r"(?i)(bearer\s+)\S+")

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def mask_token(token: str) -> str:
    """Show a token as its prefix and last four characters: ``crs_…9c5b``."""
    if not token:
        return "<empty>"
    prefix = token[:4] if token.startswith("crs_") else ""
    if len(token) <= 12:
        return f"{prefix}…" if prefix else "…"
    return f"{prefix}…{token[-4:]}"


def redact_text(text: str) -> str:
    """Replace every token, JWT, bearer credential or PEM private key found in ``text``."""
    if not text:
        return text
    text = _PEM_RE.sub("<private key redacted>", text)
    text = _JWT_RE.sub("<jwt redacted>", text)
    text = _BEARER_RE.sub(r"\1<redacted>", text)
    return _TOKEN_RE.sub(lambda m: mask_token(m.group(0)), text)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` with credentials replaced, for hooks and logs."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower() in _SECRET_HEADERS:
            scheme, _, _rest = value.partition(" ")
            out[name] = f"{scheme} <redacted>" if _rest else "<redacted>"
        else:
            out[name] = redact_text(value)
    return out


_SECRET_KEYS = frozenset({"token", "accesstoken", "access_token", "jwt", "privatekey", "secret"})


def redact_value(value: Any, _depth: int = 0) -> Any:
    """A copy of parsed JSON with every secret masked: strings pass through ``redact_text``
    and the values of keys named like a credential (``token``, ``accessToken``, ``jwt``, ...)
    are masked whatever they look like. Error trackers capture exception attributes, so an
    error's ``body`` must be as clean as its message."""
    if isinstance(value, str):
        return redact_text(value)
    if _depth > 50:  # absurdly deep JSON: nothing an error tracker needs
        return "<redacted: too deep>"
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and key.lower() in _SECRET_KEYS and isinstance(item, str):
                out[key] = mask_token(item) if item.startswith("crs_") else "<redacted>"
            else:
                out[key] = redact_value(item, _depth + 1)
        return out
    if isinstance(value, list):
        return [redact_value(item, _depth + 1) for item in value]
    return value
