"""What every client shares: the ``request`` trio, and the token-scoped base.

``Core`` is the state one app client owns and every client derived from it uses (the
pipeline, the token manager, the idempotency store); ``Caller`` defines ``request``,
``request_raw`` and ``request_response`` once, for the app client (JWT) and the token-scoped
clients alike; ``TokenScoped`` adds a cached token and the helpers the typed endpoints use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ._clock import Clock
from ._credentials import Auth, StaticAuth, TokenAuth, check_bearer
from ._idempotency import IdempotencyStore
from ._pipeline import Pipeline
from ._request import NO_BODY, Request, build_call, build_request
from ._sansio import check_page_args
from ._tokens import TokenManager
from ._transport import Response
from .errors import AuthenticationError, InvalidArgumentError
from .models import Page, Token

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._request import RequestOptions

__all__ = ["Caller", "Core", "TokenScoped"]

M = TypeVar("M")


class Core:
    """One app client's shared state (a plain holder: no behaviour of its own)."""

    __slots__ = (
        "app_scope",
        "base_url",
        "cache_prefix",
        "clock",
        "idempotency",
        "jwt_auth",
        "pipeline",
        "tokens",
        "total_timeout",
    )

    def __init__(
        self,
        *,
        pipeline: Pipeline,
        base_url: str,
        tokens: TokenManager,
        jwt_auth: Auth,
        idempotency: IdempotencyStore,
        app_scope: str,
        cache_prefix: str,
        clock: Clock,
        total_timeout: float | None,
    ) -> None:
        self.pipeline: Pipeline = pipeline
        self.base_url: str = base_url
        self.tokens: TokenManager = tokens
        self.jwt_auth: Auth = jwt_auth
        self.idempotency: IdempotencyStore = idempotency
        self.app_scope: str = app_scope
        self.cache_prefix: str = cache_prefix
        self.clock: Clock = clock
        self.total_timeout: float | None = total_timeout

    def build(self, method: str, path: str, *, safe: bool | None = None, **options: Any) -> Request:
        """A request for a path the SDK built from checked ids (no path re-check)."""
        return build_request(
            method, path, base_url=self.base_url, safe=safe, checked=True, **options
        )

    def get(self, path: str) -> Request:
        """``build("GET", path)`` without the option handling: the typed reads' hot path."""
        return Request("GET", path, self.base_url + path, None, None, True, True, None)

    async def revoke(self, value: str, key: str | None) -> bool:
        """``DELETE /app/installations/token`` with ``value`` as the bearer; the token is
        dropped from the cache either way. ``False`` when the server already considered
        it invalid (a 401)."""
        value = check_bearer(value, "token to revoke")
        request = self.build("DELETE", "/app/installations/token", safe=True)
        try:
            result = await self.pipeline.json(request, StaticAuth(value))
        except AuthenticationError:
            result = False
        finally:
            if key is not None:
                await self.tokens.invalidate(key, value)
            else:
                self.tokens.memory.discard_token(value)
        return bool(result) if result is not None else True


class Caller:
    """``request``, ``request_raw`` and ``request_response``, written once."""

    __slots__ = ()

    _core: Core
    _auth: Auth

    def _build(self, method: str, path: str, options: RequestOptions) -> Request:
        return build_call(method, path, base_url=self._core.base_url, options=options)

    async def request(self, method: str, path: str, **options: Unpack[RequestOptions]) -> Any:
        """Call any endpoint and return the decoded JSON.

        Options: ``params`` (the query), ``json`` (a body), ``retry`` and ``timeout`` (see
        ``RequestOptions``). GET and HEAD are retried on transient failures; other methods
        only with ``retry=True`` — a credit action repeated is a credit action done twice.
        """
        return await self._core.pipeline.json(self._build(method, path, options), self._auth)

    async def request_raw(self, method: str, path: str, **options: Unpack[RequestOptions]) -> bytes:
        """Like ``request`` but returns the body bytes undecoded (e.g. a retirement PDF)."""
        request = self._build(method, path, options)
        return (await self._core.pipeline.send(request, self._auth)).content

    async def request_response(
        self, method: str, path: str, **options: Unpack[RequestOptions]
    ) -> Response:
        """Like ``request`` but returns the whole ``Response``: status, headers (with the
        request id) and body bytes. Error statuses still raise their typed errors."""
        request = self._build(method, path, options)
        return await self._core.pipeline.send(request, self._auth)

    # -- shared by the typed endpoint methods (of the app client and the token clients) --

    # Plain functions that return the pipeline's coroutine: no frame of their own between
    # a typed call and the send loop (see Pipeline.send).

    def _json(self, method: str, path: str, *, json: Any = NO_BODY) -> Coroutine[Any, Any, Any]:
        return self._core.pipeline.json(self._core.build(method, path, json=json), self._auth)

    def _send(self, method: str, path: str) -> Coroutine[Any, Any, Response]:
        return self._core.pipeline.send(self._core.build(method, path), self._auth)

    def _model(
        self, cls: type[M], method: str, path: str, *, json: Any = NO_BODY
    ) -> Coroutine[Any, Any, M]:
        core = self._core
        request = core.get(path) if method == "GET" else core.build(method, path, json=json)
        return core.pipeline.model(cls, request, self._auth)

    async def _page(
        self,
        cls: type[M],
        path: str,
        key: str,
        *,
        limit: int,
        page: int,
        params: Mapping[str, Any] | None = None,
    ) -> Page[M]:
        limit, page = check_page_args(limit, page)
        request = self._core.build(
            "GET", path, params={**(params or {}), "limit": limit, "page": page}
        )
        return await self._core.pipeline.page(cls, request, key, self._auth, limit=limit, page=page)

    def _iterate(
        self,
        cls: type[M],
        path: str,
        key: str,
        *,
        page_size: int,
        start_page: int,
        params: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[M]:
        check_page_args(page_size, start_page)
        core = self._core
        return core.pipeline.iterate(
            cls,
            lambda query: core.build("GET", path, params=query),
            key,
            self._auth,
            page_size=page_size,
            start_page=start_page,
            params=params,
        )


class TokenScoped(Caller):
    """The base of the installation and app-token clients: a cached token on every request."""

    __slots__ = ("_auth", "_core", "_key")

    def __init__(self, core: Core, key: str, auth: TokenAuth) -> None:
        self._core = core
        self._key = key
        self._auth = auth

    async def get_token(self, *, min_ttl: float | None = None) -> Token:
        """A token that lives at least ``min_ttl`` seconds more (and always more than the
        refresh margin), minted only if the cached one does not."""
        if min_ttl is not None and (
            isinstance(min_ttl, bool) or not isinstance(min_ttl, (int, float)) or min_ttl < 0
        ):
            raise InvalidArgumentError(f"min_ttl must be a number of seconds >= 0, got {min_ttl!r}")
        return await self._core.tokens.get(self._key, self._auth.installation_id, min_ttl=min_ttl)

    async def revoke(self) -> bool:
        """Revoke the cached token server-side and drop it. ``False`` if none was cached or
        the server already considered it invalid."""
        cached = self._core.tokens.memory.peek(self._key)
        if cached is None:
            return False
        return await self._core.revoke(cached.token, self._key)
