"""Webhook events: from a delivery's body to a :class:`WebhookEvent` read from the trusted
payload only.

:func:`parse_event` verifies the signature (:mod:`icr_async._webhook_signing`), decodes
``signedData`` and reads the payload through the SDK's one converter, so an event's
``installation`` is the same :class:`~icr_async.models.Installation` the API returns, read by
the same rules. The scheme and its security are described in :mod:`icr_async.webhooks`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Final

import attrs

from ._converters import LOCAL, DecodeFailure, decode
from ._webhook_signing import as_bytes, check_digest, parse_signature_header, secret_bytes
from .errors import WebhookPayloadError
from .models import Installation, Transaction, User

__all__ = ["KNOWN_EVENTS", "EventType", "WebhookEvent", "parse_event"]

_B64_URLSAFE_TO_STD: Final = str.maketrans("-_", "+/")


class EventType:
    """The event names ICR documents; any other name is still delivered, never rejected."""

    INSTALLED: Final = "installed"
    UNINSTALLED: Final = "uninstalled"
    SUSPENDED: Final = "suspended"
    UNSUSPENDED: Final = "unsuspended"
    NEW_PERMISSIONS_ACCEPTED: Final = "newPermissionsAccepted"
    WAREHOUSE_TRANSACTION: Final = "warehouseTransaction"
    ORGANIZATION_TRANSACTION: Final = "organizationTransaction"


KNOWN_EVENTS: Final = frozenset(
    {
        EventType.INSTALLED,
        EventType.UNINSTALLED,
        EventType.SUSPENDED,
        EventType.UNSUSPENDED,
        EventType.NEW_PERMISSIONS_ACCEPTED,
        EventType.WAREHOUSE_TRANSACTION,
        EventType.ORGANIZATION_TRANSACTION,
    }
)
"""Every event name in :class:`EventType`."""


@attrs.frozen
class WebhookEvent:
    """One webhook delivery, built from the trusted payload only.

    ``event`` is the event name as sent (compare with :class:`EventType`; unknown names are
    kept). ``installation`` is the installation the event is about, the same
    :class:`~icr_async.models.Installation` model ``get_installation`` returns (unknown keys in
    its ``extra``). ``sender`` is the user who caused the event (ICR sends ``{id, url, email,
    fullName, profilePicture}``). ``transaction`` is the credit movement of a transaction
    event. ``raw`` is the whole trusted payload as sent (the decoded ``signedData`` when there
    is one). ``verified`` says whether a signature was checked (``False`` only with
    ``secret=None``); like ``raw``, it is set by :func:`parse_event`, never read from the
    payload.
    """

    event: str
    installation: Installation | None = None
    sender: User | None = None
    transaction: Transaction | None = None
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False, metadata=LOCAL)
    verified: bool = attrs.field(default=False, metadata=LOCAL)

    @property
    def is_known(self) -> bool:
        """Whether ``event`` is one of the documented :data:`KNOWN_EVENTS`."""
        return self.event in KNOWN_EVENTS

    @property
    def installation_id(self) -> str | None:
        """The installation's id, when the payload has an installation."""
        return None if self.installation is None else self.installation.id


def _load_json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except RecursionError:
        raise WebhookPayloadError(f"{what} is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int too long
        raise WebhookPayloadError(f"{what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise WebhookPayloadError(f"{what} is not a JSON object")
    return value


def _load_body(body: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(body, Mapping):
        return dict(body)
    return _load_json_object(as_bytes(body), "the request body")


def _decode_signed_data(value: Any) -> dict[str, Any]:
    if not isinstance(value, str):
        raise WebhookPayloadError("signedData must be a base64 string")
    text = value.strip().translate(_B64_URLSAFE_TO_STD)
    text += "=" * (-len(text) % 4)
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookPayloadError("signedData is not valid base64") from exc
    return _load_json_object(decoded, "the decoded signedData")


def _trusted_or_outer(outer: dict[str, Any]) -> dict[str, Any]:
    """The decoded ``signedData`` when the body has one, else the body itself."""
    if outer.get("signedData") is not None:
        return _decode_signed_data(outer["signedData"])
    return outer


def _read_event(payload: dict[str, Any], *, verified: bool) -> WebhookEvent:
    try:
        event = decode(payload, WebhookEvent, root="payload")
    except DecodeFailure as failure:
        raise WebhookPayloadError(
            f"unexpected webhook payload: {failure.detail}"
        ) from failure.__cause__
    if not event.event:
        raise WebhookPayloadError("unexpected webhook payload: empty event name @ payload.event")
    return attrs.evolve(event, raw=payload, verified=verified)


def parse_event(
    body: bytes | str | Mapping[str, Any],
    *,
    signature: str | None,
    secret: str | bytes | None,
    legacy_whole_body: bool = False,
) -> WebhookEvent:
    """Verify one delivery and return its event.

    ``body`` is the raw request body (``bytes`` or ``str``) or an already parsed JSON object;
    ``signature`` is the :data:`~icr_async.webhooks.SIGNATURE_HEADER` value (``None`` when
    absent).

    With a ``secret``, the signature is checked over the ``signedData`` string (or over the raw
    body with ``legacy_whole_body=True``, which then requires ``bytes``/``str``), and the event
    is built only from the decoded ``signedData``. ``secret=None`` must be passed knowingly:
    nothing is verified and the event comes from ``signedData`` if present, else the body.

    Raises :class:`~icr_async.errors.WebhookSignatureError` for a missing or wrong signature
    (checked before the body is parsed where the scheme allows) and
    :class:`~icr_async.errors.WebhookPayloadError` for a malformed body, base64, JSON or
    payload shape. Unknown event names and unknown keys are kept.
    """
    if secret is None:
        return _read_event(_trusted_or_outer(_load_body(body)), verified=False)

    key = secret_bytes(secret)
    provided = parse_signature_header(signature)
    if legacy_whole_body:
        if isinstance(body, Mapping):
            raise TypeError(
                "legacy_whole_body verifies the raw request body: pass bytes or str, "
                "not a parsed mapping"
            )
        raw = as_bytes(body)
        check_digest(raw, provided, key)
        outer = _load_json_object(raw, "the request body")
        return _read_event(_trusted_or_outer(outer), verified=True)

    outer = _load_body(body)
    signed_data = outer.get("signedData")
    if signed_data is None:
        raise WebhookPayloadError("the request body has no signedData")
    if not isinstance(signed_data, str):
        raise WebhookPayloadError("signedData must be a base64 string")
    check_digest(signed_data.encode("utf-8"), provided, key)
    return _read_event(_decode_signed_data(signed_data), verified=True)
