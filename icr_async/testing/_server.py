"""Serving an emulator over HTTP: the middleware every request passes, and the server.

Each request is counted (credit-action POST bodies recorded), may meet a planned
:class:`~icr_async.testing.Fault`, has its ``x-icr-api-version`` checked, then reaches its
route handler. :class:`EmulatorHTTPError` raised by a handler becomes ICR's NestJS error body.
Every response leaves with a ``Date`` on the emulator's server clock and, unless the emulator's
``request_id_header`` is ``None``, a fresh request id; a successful POST leaves with the
emulator's ``post_status``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import ssl
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
from aiohttp import web

from ._faults import Fault
from ._http import (
    EmulatorHTTPError,
    abort,
    check_loopback,
    filter_handshake_errors,
    make_tls,
    status_fault_response,
)

if TYPE_CHECKING:
    from ._model import EmulatorModel

__all__ = ["EmulatorServer", "make_app", "start_server"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HANG_LIMIT = 60.0
# Set on responses the middleware has stamped; others (streamed by a handler) are stamped
# by the prepare hook, whose Date aiohttp filled from the real clock just before.
# Typed response keys came in aiohttp 3.12; the oldest supported aiohttp (3.10.6) takes a str.
_STAMPED: Any = (
    web.ResponseKey("icr_emulator_stamped", bool)
    if hasattr(web, "ResponseKey")
    else "icr_emulator_stamped"
)
# Control routes keep their own statuses: they are the observer, not ICR.
_CONTROL_PREFIX = "/_emulator/"


@attrs.define
class _AppState:
    """Per-``web.Application`` state (one emulator may be served several times)."""

    stopping: asyncio.Event = attrs.field(factory=asyncio.Event)


_STATE_KEY = web.AppKey("icr_emulator_state", _AppState)


class EmulatorServer:
    """A running emulator: where to reach it, and how to stop it."""

    def __init__(
        self,
        *,
        emulator: EmulatorModel,
        runner: web.AppRunner,
        state: _AppState,
        host: str,
        port: int,
        scheme: str,
        ca_pem: str | None,
    ) -> None:
        self.emulator = emulator
        self.host = host
        self.port = port
        url_host = f"[{host}]" if ":" in host else host
        self.url: str = f"{scheme}://{url_host}:{port}"
        """The base URL to give the SDK, e.g. ``http://127.0.0.1:54321``."""
        self.ca_pem = ca_pem
        """With ``tls=True``: the PEM of the CA that signed the server certificate."""
        self._runner = runner
        self._state = state
        self._closed = False
        self._cleanups: list[Callable[[], None]] = []

    def client_ssl_context(self) -> ssl.SSLContext | None:
        """An SSL context trusting this server's CA (``None`` for plain HTTP)."""
        if self.ca_pem is None:
            return None
        return ssl.create_default_context(cadata=self.ca_pem)

    async def close(self) -> None:
        """Stop listening, wake hanging fault handlers and close connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._state.stopping.set()
        try:
            await self._runner.cleanup()
        finally:
            for cleanup in reversed(self._cleanups):
                cleanup()

    def __repr__(self) -> str:
        return f"EmulatorServer(url={self.url!r})"


class _Frontend:
    """The middleware of one application serving ``emulator``."""

    def __init__(self, emulator: EmulatorModel, state: _AppState) -> None:
        self.emulator = emulator
        self.state = state

    def stamp(self, response: web.StreamResponse) -> web.StreamResponse:
        """Add ``Date`` (server time) and a request id unless the response has its own."""
        # Set before prepare(): aiohttp keeps a Date header that is already present, and a
        # fault's own Date / request id headers stay untouched.
        headers = response.headers
        if "Date" not in headers:
            headers["Date"] = self.emulator.http_date()
        name = self.emulator.request_id_header
        if name is not None and name not in headers:
            headers[name] = str(uuid.uuid4())
        response[_STAMPED] = True
        return response

    async def on_response_prepare(
        self, _request: web.Request, response: web.StreamResponse
    ) -> None:
        """Stamp a response prepared outside the middleware (its Date is real time)."""
        if not response.get(_STAMPED):
            response.headers.pop("Date", None)
            self.stamp(response)

    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count the request, apply a fault if one is planned, else dispatch it."""
        emulator = self.emulator
        method = request.method
        emulator.stats.requests[(method, request.match_info.route.name or "unmatched")] += 1
        if method == "POST" and not request.path.startswith("/app/"):
            emulator.stats.posts[(request.path, await request.read())] += 1
        if emulator.rate_limiter.limit is not None and not request.path.startswith(_CONTROL_PREFIX):
            limited = self._rate_limited(request)
            if limited is not None:
                return self.stamp(limited)
        if emulator.faults:
            fault = emulator.faults.select(method, request.path)
            if fault is not None:
                response = await self._apply_fault(fault, request, handler)
                return response if response.prepared else self.stamp(response)
        return self.stamp(await self.dispatch(request, handler))

    def _rate_limited(self, request: web.Request) -> web.Response | None:
        """The 429 for a request over the emulator's rate limit, or ``None``."""
        emulator = self.emulator
        limit = emulator.rate_limiter.limit
        assert limit is not None
        scope = _limit_scope(emulator, request.headers.get("Authorization", ""), limit.scope)
        if scope is None:
            return None
        now = emulator.server_now()
        until = emulator.rate_limiter.check(limit, scope, now)
        if until is None:
            return None
        emulator.stats.rate_limited += 1
        wait = max(1, math.ceil(until - now))
        response = EmulatorHTTPError(429, "Too Many Requests").to_response()
        response.headers["Retry-After"] = emulator.retry_after_value(wait)
        return response

    async def dispatch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Check the API version, run the handler, and turn errors into NestJS bodies."""
        emulator = self.emulator
        try:
            version = request.headers.get("x-icr-api-version")
            if version is not None and version not in emulator.supported_api_versions:
                raise EmulatorHTTPError(400, f"Unsupported API version: {version}")
            response = await handler(request)
        except EmulatorHTTPError as error:
            return error.to_response()
        except web.HTTPException as error:
            if error.status in (404, 405):
                # NestJS answers unknown routes and wrong methods alike.
                return EmulatorHTTPError(
                    404, f"Cannot {request.method} {request.path}"
                ).to_response()
            return EmulatorHTTPError(error.status, error.reason).to_response()
        if (
            request.method == "POST"
            and response.status in (200, 201)
            and not response.prepared
            and not request.path.startswith(_CONTROL_PREFIX)
        ):
            # One place decides a successful POST's status, for every route (the ledger's
            # too), so no handler can bake in one reading.
            response.set_status(emulator.post_status)
        return response

    async def _wait_stopping(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.state.stopping.wait(), seconds)

    async def _apply_fault(
        self, fault: Fault, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if fault.delay > 0:
            await self._wait_stopping(fault.delay)
        action = fault.action
        if action == "delay":
            return await self.dispatch(request, handler)
        if action == "status":
            retry_after = None
            if fault.retry_after is not None:
                retry_after = self.emulator.retry_after_value(fault.retry_after)
            return status_fault_response(fault, retry_after)
        if action == "nonjson":
            return web.Response(
                status=200,
                text="<!DOCTYPE html><html><head><title>Bad Gateway</title></head>"
                "<body><h1>502 Bad Gateway</h1></body></html>",
                content_type="text/html",
            )
        if action == "hang":
            await self._wait_stopping(_HANG_LIMIT)
            if self.state.stopping.is_set():
                # Shutting down: still never answer, just drop the connection.
                abort(request)
                return web.Response(status=504)
            return EmulatorHTTPError(504, "Gateway Timeout").to_response()
        # The remaining actions act on the real answer: the server did the work.
        response = await self.dispatch(request, handler)
        if action == "wrong_content_type":
            response.content_type = "text/plain"
            return response
        assert isinstance(response, web.Response)
        body = response.body if isinstance(response.body, bytes) else b""
        transport = request.transport
        if action == "reset":
            # The head goes out, then the connection dies before any body byte.
            head = (
                f"HTTP/1.1 {response.status} {response.reason}\r\n"
                f"Content-Type: {response.content_type}\r\n"
                f"Content-Length: {max(len(body), 1)}\r\n"
                f"Date: {self.emulator.http_date()}\r\n\r\n"
            )
            if transport is not None:
                transport.write(head.encode("latin-1"))
            abort(request)
            return web.Response(status=response.status)
        # truncate: promise the whole body, send half, close.
        stream = web.StreamResponse(status=response.status, reason=response.reason)
        self.stamp(stream)
        stream.content_type = response.content_type
        stream.content_length = max(len(body), 2)
        await stream.prepare(request)
        await stream.write(body[: len(body) // 2] or b"{")
        if transport is not None:
            transport.close()
        return stream


def _limit_scope(emulator: EmulatorModel, authorization: str, per: str) -> str | None:
    """Whom a request counts against: ``app:ID`` or ``installation:ID`` (None: unknown)."""
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credential:
        return None
    record = emulator.token_record(credential)
    if record is not None:
        if per == "installation" and record.installation_id is not None:
            return "installation:" + record.installation_id
        return "app:" + record.app_id
    # An app JWT: the limit needs only whose it is; the route checks the signature.
    parts = credential.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return None if issuer is None else f"app:{issuer}"


def make_app(emulator: EmulatorModel) -> web.Application:
    """A fresh :class:`aiohttp.web.Application` with ``emulator``'s middleware and no routes.

    The routes are added by :meth:`~icr_async.testing.ICREmulator.make_app`.
    """
    state = _AppState()
    frontend = _Frontend(emulator, state)

    @web.middleware
    async def emulator_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await frontend.handle(request, handler)

    async def on_shutdown(_app: web.Application) -> None:
        state.stopping.set()

    app = web.Application(middlewares=[emulator_middleware])
    app[_STATE_KEY] = state
    app.on_response_prepare.append(frontend.on_response_prepare)
    app.on_shutdown.append(on_shutdown)
    return app


async def start_server(
    emulator: EmulatorModel,
    app_factory: Callable[[], web.Application],
    host: str,
    port: int,
    *,
    tls: bool,
) -> EmulatorServer:
    """Serve ``emulator`` (the application ``app_factory`` makes) on ``host:port`` (loopback
    only) until the server is closed."""
    check_loopback(host)
    ssl_context: ssl.SSLContext | None = None
    ca_pem: str | None = None
    if tls:
        ssl_context, ca_pem = make_tls()
    app = app_factory()
    # handler_cancellation: a client that gives up must also end a "hang" handler.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound_port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    server = EmulatorServer(
        emulator=emulator,
        runner=runner,
        state=app[_STATE_KEY],
        host=host,
        port=bound_port,
        scheme="https" if tls else "http",
        ca_pem=ca_pem,
    )
    if tls:
        server._cleanups.append(filter_handshake_errors(asyncio.get_running_loop()))
    emulator.base_url = server.url
    return server
