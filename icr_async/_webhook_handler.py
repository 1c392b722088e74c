"""Serving webhooks: route events to async handlers by name (:class:`WebhookDispatcher`) and
answer ICR's POSTs from an aiohttp ``web`` application (:func:`webhook_handler`).

aiohttp is imported only when a request handler is built, and only for ``web.json_response``;
the verification and parsing are :func:`~icr_async.webhooks.parse_event`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final, TypeVar

from ._webhook_events import WebhookEvent, parse_event
from ._webhook_signing import SIGNATURE_HEADER, secret_bytes
from .errors import WebhookPayloadError, WebhookSignatureError

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["DEFAULT_MAX_BODY_SIZE", "EventHandler", "WebhookDispatcher", "webhook_handler"]

logger = logging.getLogger("icr_async.webhooks")

DEFAULT_MAX_BODY_SIZE: Final = 1024 * 1024
"""The largest webhook body :func:`webhook_handler` reads by default (1 MiB)."""

EventHandler = Callable[[WebhookEvent], Awaitable[None]]
"""An async callable receiving one :class:`~icr_async.webhooks.WebhookEvent`."""

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

    key = None if secret is None else secret_bytes(secret)
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
