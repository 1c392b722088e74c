"""The ICR emulator: an in-memory ICR Apps API served by :mod:`aiohttp.web` on loopback.

:class:`ICREmulator` is the in-memory ICR of ``_model.py`` plus serving it; the pieces around
it are split by job: ``_server.py`` (the middleware and the server), ``_routes.py`` (the app
endpoints), ``_ledger.py`` / ``_ledger_routes.py`` (credits and their endpoints),
``_webhook_delivery.py``, ``_admin.py`` (the ``/_emulator/`` control routes), ``_auth.py`` (JWT
and access-token checks), ``_pagination.py``, ``_http.py`` (NestJS error bodies, loopback, TLS),
``_options.py`` (the options) and ``_variants.py`` (their presets). :meth:`ICREmulator.make_app`
is the one place that puts the application together.

Extending the emulator: write ``register(emulator, app)`` that adds routes to ``app.router``
with a ``name=`` (the name is the stats key), and append it to the emulator's
:attr:`~ICREmulator.route_registrars`; :meth:`ICREmulator.make_app` calls it after the built-in
routes. Inside handlers use :meth:`ICREmulator.authenticate_installation` (token +
organization + permission check), :meth:`ICREmulator.json_response`,
:meth:`ICREmulator.created_response`, :meth:`ICREmulator.paginated_response`,
:meth:`ICREmulator.organization` and :meth:`ICREmulator.server_now`, and raise
:class:`EmulatorHTTPError` for failures. Options apply to every route without the handler's
help: a successful POST gets ``post_status`` whatever status its handler chose, and every
list follows ``page_base`` / ``page_end_style`` through :meth:`ICREmulator.paginated_response`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ._admin import register_admin_routes
from ._http import EmulatorHTTPError
from ._ledger_routes import register_ledger_routes
from ._model import EmulatorModel
from ._records import EmulatorApp
from ._routes import register_core_routes
from ._server import EmulatorServer, make_app, start_server
from ._webhook_delivery import register_delivery

__all__ = ["EmulatorApp", "EmulatorHTTPError", "EmulatorServer", "ICREmulator", "RouteRegistrar"]

RouteRegistrar = Callable[["ICREmulator", web.Application], None]
"""A callback that adds extra routes to an emulator's application."""


class ICREmulator(EmulatorModel):
    """An in-memory ICR Apps API with real RS256 JWT checks, fault injection and statistics.

    All state lives in this object; :meth:`serve` (or :meth:`make_app`) exposes it over HTTP.
    Time is ``clock() + clock_offset`` seconds ("server time"): share a
    :class:`~icr_async._clock.ManualClock` with the client to test expiry without sleeping.

    **Every reading shared/docs/icr-api.md leaves open is an option**, a keyword argument and
    an attribute of the same name (validated on assignment, read on every request, so it may
    change between two requests). The defaults are the doc's readings;
    :data:`~icr_async.testing.VARIANTS` names combinations of the others.

    * ``page_base`` (``0`` | ``1``; Pagination: "whether ``page`` is 0- or 1-based"): ``0``
      serves ``page=0`` as the first page with ``currentPage: 0``. ``1`` numbers pages from 1
      (``currentPage: 1``, ``nextPage: 2`` on the first page) and reads ``page=0`` as the first
      page too, so ``page=0`` and ``page=1`` serve the same items.
    * ``page_end_style`` (``"null"`` | ``"absent"``; "whether ``nextPage``/``prevPage`` are
      ``null`` or absent at the ends").
    * ``post_status`` (``200`` | ``201``; the docs' tables say 200, NestJS answers 201 for a
      POST unless told otherwise): the status of every successful POST (token mints, create
      organization, credit actions, reservations), set centrally by the middleware.
    * ``clock_offset`` (seconds, e.g. ``-420``): the server's clock against ``clock``. ``Date``
      headers, ``createdAt``/``expiresAt``, the JWT checks, reservation expiry and HTTP-date
      ``Retry-After`` values all use server time. ``skew`` is the same attribute.
    * ``installation_token_ttl`` (seconds, default 7200: "lives 2 hours"; e.g. 120) and
      ``app_token_ttl`` (default 3600; "lifetime not documented: read ``expiresAt``").
    * ``retry_after_style`` (``"seconds"`` | ``"http-date"``; "honour ``Retry-After`` when it
      comes", in either HTTP form): every ``Retry-After`` the emulator sends (e.g. a
      :class:`~icr_async.testing.Fault`'s ``retry_after=7``) is either ``7`` or the HTTP date
      seven seconds after the server's now (rounded up to a whole second).
    * ``request_id_header`` (``"x-icr-request-id"`` | ``"x-request-id"`` | any header name |
      ``None``; "a request id header (``x-icr-request-id``, or the generic ``x-request-id``)"):
      every response carries a fresh UUID in that header; ``None`` sends none.

    Fixed rules (no option; the docs are clear): an app JWT is RS256 and its ``exp`` is at
    most ten minutes ahead of the server's clock, give or take ``jwt_leeway`` seconds
    (``exp - iat`` is not limited, so ICR's demo JWT, ``iat = now-60, exp = now+600``,
    passes); a revoked token's 401 says ``"Access token has been revoked"``, an expired one
    ``"Access token expired"``, and a token still inside ``propagation_lag`` gets a bare
    ``"Unauthorized"`` (replication lag names no reason).

    Other controls, plain attributes: ``jwt_leeway``, ``propagation_lag``, ``max_page_limit``,
    ``supported_api_versions``, ``repeat_pages``, :attr:`faults`, :attr:`stats`.
    """

    # ---------------------------------------------------------------------------- serving

    @functools.cached_property
    def route_registrars(self) -> list[RouteRegistrar]:
        """Callbacks :meth:`make_app` runs, after the built-in routes, to add a test's own."""
        return []

    def make_app(self) -> web.Application:
        """A fresh :class:`aiohttp.web.Application` serving this emulator's state."""
        app = make_app(self)
        # Every route in a fixed order, the emulator's own first (the explicit list replaces
        # registration on import, which tied the modules into a cycle).
        register_core_routes(self, app)
        register_admin_routes(self, app)
        register_ledger_routes(self, app)
        register_delivery(self.webhooks, app)
        for register in self.route_registrars:
            register(self, app)
        return app

    @contextlib.asynccontextmanager
    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, tls: bool = False
    ) -> AsyncIterator[EmulatorServer]:
        """Serve the emulator on loopback for the duration of an ``async with`` block.

        ``port=0`` picks a free port (read it from ``server.port`` / ``server.url``). With
        ``tls=True`` a throwaway CA (``trustme``) signs a certificate for 127.0.0.1, ::1 and
        localhost; trust ``server.ca_pem`` in the client.
        """
        server = await self.start(host, port, tls=tls)
        try:
            yield server
        finally:
            await server.close()

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, tls: bool = False
    ) -> EmulatorServer:
        """Like :meth:`serve` without the context manager: call ``await server.close()``."""
        return await start_server(self, self.make_app, host, port, tls=tls)
