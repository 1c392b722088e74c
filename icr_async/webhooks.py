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

Errors are :class:`WebhookSignatureError` (missing or wrong signature) and
:class:`WebhookPayloadError` (a body that is not the promised JSON), both under
:class:`WebhookError`. No message ever contains the secret or the expected digest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from .errors import ICRError
from .models import User

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "KNOWN_EVENTS",
    "SIGNATURE_HEADER",
    "EventHandler",
    "EventType",
    "WebhookDispatcher",
    "WebhookError",
    "WebhookEvent",
    "WebhookInstallation",
    "WebhookPayloadError",
    "WebhookSignatureError",
    "parse_event",
    "sign_payload",
    "verify_signature",
    "webhook_handler",
]

logger = logging.getLogger("icr_async.webhooks")

SIGNATURE_HEADER: Final = "x-icr-signature-256"
"""The request header carrying ``sha256=<hex>``."""

DEFAULT_MAX_BODY_SIZE: Final = 1024 * 1024
"""The largest webhook body :func:`webhook_handler` reads by default (1 MiB)."""

_SIGNATURE_RE: Final = re.compile(r"[0-9a-fA-F]{64}")
_B64_URLSAFE_TO_STD: Final = str.maketrans("-_", "+/")


# --------------------------------------------------------------------------- errors


class WebhookError(ICRError):
    """Root of every webhook error; ``message`` is safe to log and to send back."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class WebhookSignatureError(WebhookError):
    """The signature header is missing, malformed or does not match (answer 401)."""


class WebhookPayloadError(WebhookError):
    """The body is not the promised JSON: bad JSON, base64 or shape (answer 400)."""


# --------------------------------------------------------------------------- models


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
class WebhookInstallation:
    """The installation an event is about.

    ``permissions`` maps a permission name to its level (``VIEW``, ``WRITE``, ...), unknown
    names and levels kept. ``raw`` is the installation object as received, every key included
    (``createdAt``, ``accessTokensUrl``...). Never build requests from ``accessTokensUrl``.
    """

    id: str
    app_id: str | None = None
    app_name_id: str | None = None
    permissions: dict[str, str] = attrs.field(factory=dict)
    organization: dict[str, Any] | None = None
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False)

    @property
    def organization_id(self) -> str | None:
        """The organization's id, when the payload carries one."""
        if self.organization is None:
            return None
        value = self.organization.get("id")
        return None if value is None else str(value)


@attrs.frozen
class WebhookEvent:
    """One webhook delivery, built from the trusted payload only.

    ``event`` is the event name as sent (compare with :class:`EventType`; unknown names are
    kept). ``sender`` is the user who caused the event (ICR sends ``{id, url, email, fullName,
    profilePicture}``; unknown keys land in its ``extra``). ``transaction`` is the credit
    movement of a transaction event, as sent. ``raw`` is the whole trusted payload (the
    decoded ``signedData`` when there is one).
    ``verified`` says whether a signature was checked (``False`` only with ``secret=None``).
    """

    event: str
    installation: WebhookInstallation | None = None
    sender: User | None = None
    transaction: dict[str, Any] | None = None
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False)
    verified: bool = False

    @property
    def is_known(self) -> bool:
        """Whether ``event`` is one of the documented :data:`KNOWN_EVENTS`."""
        return self.event in KNOWN_EVENTS

    @property
    def installation_id(self) -> str | None:
        """The installation's id, when the payload has an installation."""
        return None if self.installation is None else self.installation.id


# --------------------------------------------------------------------------- converter


def _structure_strict_str(value: Any, _: Any) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _structure_id(value: Any, _: Any) -> str:
    # ICR ids are UUID strings; documentation examples use numbers: accept both.
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"expected an id (string or integer), got {type(value).__name__}")


def _structure_optional_id(value: Any, type_: Any) -> str | None:
    return None if value is None else _structure_id(value, type_)


def _structure_event_name(value: Any, type_: Any) -> str:
    name = _structure_strict_str(value, type_)
    if not name:
        raise ValueError("the event name is empty")
    return name


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _make_converter() -> cattrs.Converter:
    """Build the module's private converter; every hook is registered here."""
    conv = cattrs.Converter(detailed_validation=True, forbid_extra_keys=False)
    conv.register_structure_hook(str, _structure_strict_str)

    installation_fn = make_dict_structure_fn(
        WebhookInstallation,
        conv,
        id=override(struct_hook=_structure_id),
        app_id=override(rename="appId", struct_hook=_structure_optional_id),
        app_name_id=override(rename="appNameId"),
        raw=override(omit=True),
    )

    def structure_installation(value: Any, type_: Any) -> WebhookInstallation:
        if not isinstance(value, Mapping):
            raise TypeError(f"installation must be an object, got {type(value).__name__}")
        data = dict(value)
        if data.get("permissions") is None:
            data["permissions"] = {}
        return attrs.evolve(installation_fn(data, type_), raw=dict(value))

    conv.register_structure_hook(WebhookInstallation, structure_installation)

    user_fn = make_dict_structure_fn(
        User,
        conv,
        id=override(rename="id", struct_hook=_structure_optional_id),
        full_name=override(rename="fullName"),
        profile_picture=override(rename="profilePicture"),
        extra=override(omit=True),
    )
    known_user_keys = frozenset(_camel(f.name) for f in attrs.fields(User) if f.name != "extra")

    def structure_user(value: Any, type_: Any) -> User:
        if not isinstance(value, Mapping):
            raise TypeError(f"sender must be an object, got {type(value).__name__}")
        extra = {k: v for k, v in value.items() if k not in known_user_keys}
        return attrs.evolve(user_fn(value, type_), extra=extra)

    conv.register_structure_hook(User, structure_user)

    event_fn = make_dict_structure_fn(
        WebhookEvent,
        conv,
        event=override(struct_hook=_structure_event_name),
        raw=override(omit=True),
        verified=override(omit=True),
    )

    def structure_event(value: Any, type_: Any) -> WebhookEvent:
        if not isinstance(value, Mapping):
            raise TypeError(f"the payload must be an object, got {type(value).__name__}")
        return attrs.evolve(event_fn(value, type_), raw=dict(value))

    conv.register_structure_hook(WebhookEvent, structure_event)
    return conv


_CONVERTER: Final = _make_converter()


# --------------------------------------------------------------------------- signatures


def _secret_bytes(secret: str | bytes) -> bytes:
    if isinstance(secret, str):
        key = secret.encode("utf-8")
    elif isinstance(secret, (bytes, bytearray, memoryview)):
        key = bytes(secret)
    else:
        raise TypeError(f"the webhook secret must be str or bytes, not {type(secret).__name__}")
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def _as_bytes(data: str | bytes) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"expected str or bytes, not {type(data).__name__}")


def _parse_signature_header(header: str | None) -> bytes:
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


def _check_digest(data: bytes, provided: bytes, key: bytes) -> None:
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
    key = _secret_bytes(secret)
    provided = _parse_signature_header(signature_header)
    _check_digest(_as_bytes(signed_data), provided, key)


def sign_payload(
    payload: Mapping[str, Any], secret: str | bytes, *, legacy_whole_body: bool = False
) -> tuple[bytes, dict[str, str]]:
    """Build a webhook delivery as ICR sends it: ``(body bytes, headers)``.

    The body is ``payload``'s fields plus ``signedData`` = base64(JSON of ``payload``); the
    headers are ``content-type`` and :data:`SIGNATURE_HEADER`, signed over ``signedData`` (or
    over the whole body with ``legacy_whole_body=True``). For the emulator and for tests of
    your own webhook endpoint.
    """
    key = _secret_bytes(secret)
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


# --------------------------------------------------------------------------- parsing


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
    return _load_json_object(_as_bytes(body), "the request body")


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


def _structure_event(payload: dict[str, Any], *, verified: bool) -> WebhookEvent:
    try:
        event = _CONVERTER.structure(payload, WebhookEvent)
    except cattrs.BaseValidationError as exc:
        details = "; ".join(cattrs.transform_error(exc, path="payload"))
        raise WebhookPayloadError(f"unexpected webhook payload: {details}") from exc
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise WebhookPayloadError("unexpected webhook payload") from exc
    return attrs.evolve(event, verified=verified)


def parse_event(
    body: bytes | str | Mapping[str, Any],
    *,
    signature: str | None,
    secret: str | bytes | None,
    legacy_whole_body: bool = False,
) -> WebhookEvent:
    """Verify one delivery and return its event.

    ``body`` is the raw request body (``bytes`` or ``str``) or an already parsed JSON object;
    ``signature`` is the :data:`SIGNATURE_HEADER` value (``None`` when absent).

    With a ``secret``, the signature is checked over the ``signedData`` string (or over the raw
    body with ``legacy_whole_body=True``, which then requires ``bytes``/``str``), and the event
    is built only from the decoded ``signedData``. ``secret=None`` must be passed knowingly:
    nothing is verified and the event comes from ``signedData`` if present, else the body.

    Raises :class:`WebhookSignatureError` for a missing or wrong signature (checked before the
    body is parsed where the scheme allows) and :class:`WebhookPayloadError` for a malformed
    body, base64, JSON or payload shape. Unknown event names and unknown keys are kept.
    """
    if secret is None:
        outer = _load_body(body)
        has_signed = outer.get("signedData") is not None
        payload = _decode_signed_data(outer["signedData"]) if has_signed else outer
        return _structure_event(payload, verified=False)

    key = _secret_bytes(secret)
    provided = _parse_signature_header(signature)
    if legacy_whole_body:
        if isinstance(body, Mapping):
            raise TypeError(
                "legacy_whole_body verifies the raw request body: pass bytes or str, "
                "not a parsed mapping"
            )
        raw = _as_bytes(body)
        _check_digest(raw, provided, key)
        outer = _load_json_object(raw, "the request body")
        has_signed = outer.get("signedData") is not None
        payload = _decode_signed_data(outer["signedData"]) if has_signed else outer
        return _structure_event(payload, verified=True)

    outer = _load_body(body)
    signed_data = outer.get("signedData")
    if signed_data is None:
        raise WebhookPayloadError("the request body has no signedData")
    if not isinstance(signed_data, str):
        raise WebhookPayloadError("signedData must be a base64 string")
    _check_digest(signed_data.encode("utf-8"), provided, key)
    return _structure_event(_decode_signed_data(signed_data), verified=True)


# --------------------------------------------------------------------------- dispatch

EventHandler = Callable[[WebhookEvent], Awaitable[None]]
"""An async callable receiving one :class:`WebhookEvent`."""

_H = TypeVar("_H", bound=EventHandler)


class WebhookDispatcher:
    """Route events to async handlers by name, with an optional catch-all.

    ::

        dispatcher = WebhookDispatcher()

        @dispatcher.on(EventType.INSTALLED)
        async def installed(event: WebhookEvent) -> None: ...

        app.router.add_post("/webhooks/icr", dispatcher.handler(secret))

    Handlers registered after :meth:`handler` was called are still used.
    """

    def __init__(
        self,
        handlers: Mapping[str, EventHandler] | None = None,
        *,
        on_event: EventHandler | None = None,
    ) -> None:
        self._handlers: dict[str, EventHandler] = {}
        self._fallback: EventHandler | None = None
        for name, fn in (handlers or {}).items():
            self._add(name, fn)
        if on_event is not None:
            self.on_any(on_event)

    def _add(self, name: str, fn: EventHandler) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("an event name must be a non-empty string")
        if not callable(fn):
            raise TypeError(f"the handler for {name!r} is not callable")
        if name in self._handlers:
            raise ValueError(f"a handler for {name!r} is already registered")
        self._handlers[name] = fn

    def on(self, event: str) -> Callable[[_H], _H]:
        """Decorator: register ``fn`` for the event named ``event`` (one handler per name)."""

        def register(fn: _H) -> _H:
            self._add(event, fn)
            return fn

        return register

    def on_any(self, fn: _H) -> _H:
        """Decorator: register the catch-all for events without their own handler."""
        if not callable(fn):
            raise TypeError("the catch-all handler is not callable")
        if self._fallback is not None:
            raise ValueError("a catch-all handler is already registered")
        self._fallback = fn
        return fn

    def handler_for(self, event: str) -> EventHandler | None:
        """The handler ``event`` would go to: its own, else the catch-all, else ``None``."""
        return self._handlers.get(event, self._fallback)

    async def dispatch(self, event: WebhookEvent) -> bool:
        """Run the handler for ``event``; ``False`` when none applies (the event is dropped)."""
        fn = self.handler_for(event.event)
        if fn is None:
            return False
        await fn(event)
        return True

    def handler(
        self,
        secret: str | bytes | None,
        *,
        legacy_whole_body: bool = False,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """An aiohttp request handler dispatching through this object.

        The arguments and answers are those of :func:`webhook_handler`.
        """
        return _make_request_handler(
            secret,
            self.dispatch,
            legacy_whole_body=legacy_whole_body,
            max_body_size=max_body_size,
        )


# --------------------------------------------------------------------------- aiohttp


def webhook_handler(
    secret: str | bytes | None,
    *,
    on_event: EventHandler | None = None,
    handlers: Mapping[str, EventHandler] | None = None,
    legacy_whole_body: bool = False,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp ``web`` request handler that verifies, parses and dispatches webhooks.

    ``handlers`` maps event names to async callables; events without one go to ``on_event``
    (and are acknowledged and dropped when there is neither). Answers:

    * 200 ``{"ok": true}`` once the handler returned;
    * 401 for a missing or wrong signature, 400 for a malformed body, 413 for a body larger
      than ``max_body_size`` bytes, 405 for a method other than POST;
    * 500 when the handler raised (logged on ``icr_async.webhooks``, ICR may redeliver).

    Error answers are ``{"ok": false, "error": "<short reason>"}``. ``secret=None`` disables
    signature checks and must be passed explicitly (a warning is logged once).
    """
    dispatcher = WebhookDispatcher(handlers, on_event=on_event)
    return _make_request_handler(
        secret,
        dispatcher.dispatch,
        legacy_whole_body=legacy_whole_body,
        max_body_size=max_body_size,
    )


def _make_request_handler(
    secret: str | bytes | None,
    dispatch: Callable[[WebhookEvent], Awaitable[bool]],
    *,
    legacy_whole_body: bool,
    max_body_size: int,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    from aiohttp import web

    key = None if secret is None else _secret_bytes(secret)
    if isinstance(max_body_size, bool) or not isinstance(max_body_size, int) or max_body_size < 1:
        raise ValueError("max_body_size must be a positive integer")
    if key is None:
        logger.warning("ICR webhook handler built without a secret: signatures are not checked")

    def failure(status: int, message: str) -> web.Response:
        return web.json_response({"ok": False, "error": message}, status=status)

    async def read_body(request: web.Request) -> bytes | None:
        length = request.content_length
        if length is not None and length > max_body_size:
            return None
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            total += len(chunk)
            if total > max_body_size:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def handle(request: web.Request) -> web.Response:
        if request.method != "POST":
            response = failure(405, "method not allowed")
            response.headers["Allow"] = "POST"
            return response
        body = await read_body(request)
        if body is None:
            return failure(413, f"body larger than {max_body_size} bytes")
        try:
            event = parse_event(
                body,
                signature=request.headers.get(SIGNATURE_HEADER),
                secret=key,
                legacy_whole_body=legacy_whole_body,
            )
        except WebhookSignatureError as exc:
            logger.warning("rejected ICR webhook: %s", exc.message)
            return failure(401, exc.message)
        except WebhookPayloadError as exc:
            logger.warning("rejected ICR webhook: %s", exc.message)
            return failure(400, exc.message)
        try:
            handled = await dispatch(event)
        except Exception:
            logger.exception(
                "ICR webhook handler for event %r (installation %r) failed",
                event.event,
                event.installation_id,
            )
            return failure(500, "the webhook handler failed")
        if not handled:
            logger.debug("no handler for ICR webhook event %r; acknowledged", event.event)
        return web.json_response({"ok": True})

    return handle
