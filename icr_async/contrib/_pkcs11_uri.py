"""PKCS#11 URIs (RFC 7512) for :mod:`icr_async.contrib.pkcs11`: parsing one, and writing a key's.

Pure text handling with no PKCS#11 binding, so a malformed URI fails the same way whether or
not python-pkcs11 is installed. Errors name attributes, never their values: the URI may carry
the PIN.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import attrs

from ..errors import ConfigurationError

__all__ = ["PKCS11URI", "key_uri", "parse_pkcs11_uri"]

_PATH_ATTRIBUTES = frozenset(
    {"token", "serial", "manufacturer", "model", "slot-id", "object", "id", "type"}
)
_QUERY_ATTRIBUTES = frozenset({"module-path", "module-name", "pin-value", "pin-source"})


@attrs.frozen
class PKCS11URI:
    """What a PKCS#11 URI (RFC 7512) names, as far as this signer uses it.

    ``pin`` is excluded from ``repr`` and comparisons; ``key_object_id`` holds the raw
    bytes of the ``id`` attribute.
    """

    module_path: str | None = None
    token_label: str | None = None
    token_serial: str | None = None
    token_manufacturer: str | None = None
    token_model: str | None = None
    slot_id: int | None = None
    key_label: str | None = None
    key_object_id: bytes | None = None
    pin: str | None = attrs.field(default=None, repr=False, eq=False)


def _decode(name: str, value: str) -> str:
    try:
        return urllib.parse.unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise ConfigurationError(f"PKCS#11 URI attribute {name!r} is not UTF-8") from None


def _read_pin_source(source: str) -> str:
    path = source[len("file:") :] if source.startswith("file:") else source
    if path.startswith("//"):  # file:///path
        path = urllib.parse.urlsplit("file:" + path).path
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the PKCS#11 pin-source file {path}: {exc.strerror}"
        ) from None


def parse_pkcs11_uri(uri: str) -> PKCS11URI:
    """Parse the common subset of RFC 7512: ``pkcs11:token=..;object=..;id=%01?module-path=..``.

    Path attributes: ``token``, ``serial``, ``manufacturer``, ``model``, ``slot-id``,
    ``object``, ``id``, ``type`` (``private`` or ``public``: either names the key pair).
    Query attributes: ``module-path``, ``pin-value``, ``pin-source`` (a file holding the
    PIN). ``library-*`` attributes are ignored (``module-path`` names the library) and so
    are vendor ``x-`` ones; anything else is refused rather than silently matching more.
    Errors name attributes, never their values: the URI may carry the PIN.
    """
    if not isinstance(uri, str) or not uri.lower().startswith("pkcs11:"):
        raise ConfigurationError("a PKCS#11 URI starts with 'pkcs11:'")
    path, _, query = uri[len("pkcs11:") :].partition("?")
    fields: dict[str, str] = {}
    for part, separator, allowed in (
        (path, ";", _PATH_ATTRIBUTES),
        (query, "&", _QUERY_ATTRIBUTES),
    ):
        for item in part.split(separator) if part else ():
            name, eq, value = item.partition("=")
            name = name.strip().lower()
            if not eq or not name:
                raise ConfigurationError(
                    f"PKCS#11 URI attribute {name or item[:20]!r} has no value"
                )
            if name.startswith(("x-", "library-")):
                continue
            if name not in allowed:
                raise ConfigurationError(
                    f"PKCS#11 URI attribute {name!r} is not supported here (supported: "
                    f"{', '.join(sorted(_PATH_ATTRIBUTES | _QUERY_ATTRIBUTES))})"
                )
            if name in fields:
                raise ConfigurationError(f"PKCS#11 URI attribute {name!r} is given twice")
            fields[name] = value
    if "module-name" in fields:
        raise ConfigurationError(
            "PKCS#11 URI: module-name is not supported; give module-path=/path/to/module.so"
        )
    if "pin-value" in fields and "pin-source" in fields:
        raise ConfigurationError("PKCS#11 URI: give pin-value or pin-source, not both")
    kind = _decode("type", fields["type"]) if "type" in fields else None
    if kind not in (None, "private", "public"):
        raise ConfigurationError("PKCS#11 URI: type must name the RSA key pair (private or public)")
    slot_id: int | None = None
    if "slot-id" in fields:
        try:
            slot_id = int(_decode("slot-id", fields["slot-id"]))
        except ValueError:
            raise ConfigurationError("PKCS#11 URI: slot-id must be a number") from None
    key_object_id: bytes | None = None
    if "id" in fields:
        key_object_id = urllib.parse.unquote_to_bytes(fields["id"])
    pin = None
    if "pin-value" in fields:
        pin = _decode("pin-value", fields["pin-value"])
    elif "pin-source" in fields:
        pin = _read_pin_source(_decode("pin-source", fields["pin-source"]))

    def text(name: str) -> str | None:
        return _decode(name, fields[name]) if name in fields else None

    return PKCS11URI(
        module_path=text("module-path"),
        token_label=text("token"),
        token_serial=text("serial"),
        token_manufacturer=text("manufacturer"),
        token_model=text("model"),
        slot_id=slot_id,
        key_label=text("object"),
        key_object_id=key_object_id,
        pin=pin,
    )


def _uri_value(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def key_uri(token_label: str, key_label: str | None, key_object_id: bytes | None) -> str:
    """The RFC 7512 URI of a key without module path or PIN: safe to log."""
    parts = [f"token={_uri_value(token_label)}"]
    if key_label:
        parts.append(f"object={_uri_value(key_label)}")
    if key_object_id:
        parts.append("id=" + "".join(f"%{byte:02X}" for byte in key_object_id))
    return "pkcs11:" + ";".join(parts)
