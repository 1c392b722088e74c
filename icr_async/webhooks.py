"""Receiving ICR webhooks: signature check, event parsing and an aiohttp handler.

The scheme
----------
ICR POSTs a JSON body to the app's webhook URL::

    {"event": "installed", "installation": {...}, "sender": {...}, "transaction": {...},
     "signedData": "<base64 of the JSON payload>"}

``signedData`` is the base64 encoding of the JSON payload itself (``event``,
``installation``, ``sender`` and, for transaction events, ``transaction``). When the app has a
webhook secret, ICR adds the header::

    x-icr-signature-256: sha256=<hex HMAC-SHA256(secret, the signedData string)>

:func:`parse_event` checks that header in constant time over the ``signedData`` string, then
decodes ``signedData`` and builds the event from it alone.

Why only ``signedData`` is trusted
----------------------------------
The HMAC covers the ``signedData`` string, not the JSON around it. Anyone who captured one
genuine delivery could replay its ``signedData`` and signature with forged outer fields
(another ``installation``, another ``event``). So once a signature is verified the outer
fields are ignored: :attr:`WebhookEvent.raw` is the decoded ``signedData`` payload, nothing else.

Legacy mode
-----------
A 2023 version of ICR's demo handler signed the whole request body instead. Pass
``legacy_whole_body=True`` to verify the HMAC over the raw request bytes (so the raw body must
be given as ``bytes`` or ``str``, never a parsed mapping); the event is then read from the
decoded ``signedData`` when the body has one, else from the (signed) body itself.

Without a secret
----------------
An app may run without a webhook secret; ICR then sends no signature. ``secret=None`` must be
passed explicitly: nothing is verified, :attr:`WebhookEvent.verified` is ``False``, and the
event comes from ``signedData`` when present, else from the outer body. Anyone who can reach
the URL can then forge events: confirm anything important with the API before acting on it.

Neither scheme carries a timestamp or delivery id, so replays of a genuine delivery cannot be
detected here: make event handling idempotent.

What an event carries
---------------------
The payload is read by the SDK's one converter, with the rules of every API answer: the
event's ``installation`` is the :class:`~icr_async.models.Installation` that
``get_installation`` returns (same ``Permissions``, unknown keys in ``extra``), ``sender`` a
:class:`~icr_async.models.User` and ``transaction`` a :class:`~icr_async.models.Transaction`.
Ids are strings; an integer id is taken as its decimal text, any other kind is refused.

Errors are :class:`WebhookSignatureError` (missing or wrong signature) and
:class:`WebhookPayloadError` (a body that is not the promised JSON), both under
:class:`WebhookError` in :mod:`icr_async.errors`. No message ever contains the secret or the
expected digest.

This module is the public import path; the work is done in ``_webhook_signing`` (HMAC),
``_webhook_events`` (parsing) and ``_webhook_handler`` (dispatch and the aiohttp handler).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._compat import deprecated_names
from ._webhook_events import KNOWN_EVENTS, EventType, WebhookEvent, parse_event
from ._webhook_handler import (
    DEFAULT_MAX_BODY_SIZE,
    EventHandler,
    WebhookDispatcher,
    webhook_handler,
)
from ._webhook_signing import SIGNATURE_HEADER, sign_payload, verify_signature
from .errors import WebhookError, WebhookPayloadError, WebhookSignatureError
from .models import Installation

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "KNOWN_EVENTS",
    "SIGNATURE_HEADER",
    "EventHandler",
    "EventType",
    "WebhookDispatcher",
    "WebhookError",
    "WebhookEvent",
    "WebhookPayloadError",
    "WebhookSignatureError",
    "parse_event",
    "sign_payload",
    "verify_signature",
    "webhook_handler",
]

# An event's installation is the API's ``Installation`` now; the old name works
# for one more release (isinstance checks and annotations), with a DeprecationWarning.
__getattr__: Callable[[str], Any] = deprecated_names(
    "icr_async.webhooks", {"Installation": Installation}, {"WebhookInstallation": "Installation"}
)
