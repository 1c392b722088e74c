"""The asyncio client: the app's identity, its endpoints, and the clients derived from it.

``AsyncICRClient`` speaks for the app (it signs the app JWT) and derives clients that speak
for one installation (``client.installation(id)``) or with the app access token
(``client.app_token_client()``). The blocking ``ICRClient`` in ``icr_async.sync`` runs these
very coroutines on a background loop; nothing here is written twice.

Every call is built into a ``Request`` (``_request``) and sent by the one ``Pipeline``
(``_pipeline``): credential → transport → 401 recovery → retries within one deadline →
decode or typed error. This module only wires the parts together and names the endpoints.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp

from ._backoff import BackoffStore, MemoryBackoffStore
from ._clock import Clock, system_clock
from ._config import ClientConfig, Timeouts
from ._credentials import JWTAuth, TokenAuth
from ._hooks import RequestHook, ResponseHook
from ._idempotency import IdempotencyStore, MemoryIdempotencyStore
from ._jwt import AppJWT, ClockSync
from ._keys import KeySource
from ._organizations import OrganizationEndpoints, ProjectEndpoints
from ._pipeline import Pipeline
from ._retry import RetryPolicy
from ._sansio import path_param, server_time
from ._scoped import Caller, Core, TokenScoped
from ._settings import resolve_settings
from ._signers import Signer
from ._token_answer import AccessTokenAnswer, token_from_answer
from ._tokens import ClientStats, MemoryTokenCache, TokenCache, TokenManager
from ._transport import AiohttpTransport, Transport
from .errors import ConfigurationError, InvalidArgumentError
from .models import CreatedOrganization, Installation, OrganizationType, Page, Token

__all__ = ["AsyncAppTokenClient", "AsyncICRClient", "AsyncInstallationClient"]

Sleep = Callable[[float], Awaitable[None]]

# The base of both token-scoped clients, under the name the blocking twins import.
_TokenScopedClient = TokenScoped


class AsyncICRClient(Caller):
    """The ICR Apps API for one app, on asyncio.

    Use it as ``async with AsyncICRClient(app_id, private_key) as client:`` or close it with
    ``await client.aclose()``. Credentials come from the arguments or the environment
    (``ICR_APP_ID``, ``ICR_PRIVATE_KEY`` with PEM text, ``ICR_PRIVATE_KEY_PATH``), or, for a
    key that never enters the process, ``signer=`` (an HSM or KMS ``Signer``; a list of
    signers is a key rotation: the first signs, and when ICR refuses its key the next is
    tried once and kept); settings
    from the arguments, then ``ICR_BASE_URL`` / ``ICR_API_VERSION``. Every mistake in them
    raises ``ConfigurationError`` here, not on the first request.

    One transport (by default ``AiohttpTransport``: one aiohttp session, made lazily inside
    the running loop) serves every request of this client and of the installation clients
    derived from it; ``transport=`` swaps it for any ``Transport`` (a recorder, a test
    double, another HTTP library). A client belongs to the event loop it first runs on.

    ``request``, ``request_raw`` and ``request_response`` call any ``/app/...`` endpoint with
    the app JWT (see ``RequestOptions`` for their per-call options).

    A fleet of workers shares what one process would keep to itself through three optional
    stores (e.g. from ``icr_async.contrib.redis``): ``token_cache=`` (installation tokens),
    ``idempotency_store=`` (credit actions sent with an ``idempotency_key``; default: this
    process's memory) and ``backoff=`` (pauses after a 429 / 503 with ``Retry-After``;
    default: shared by this process's requests).
    """

    config: ClientConfig
    """The frozen settings this client was built with."""
    stats: ClientStats
    """Counters about tokens and requests."""

    def __init__(
        self,
        app_id: str | int | None = None,
        private_key: KeySource | None = None,
        *,
        private_key_path: str | os.PathLike[str] | None = None,
        private_key_password: str | bytes | None = None,
        signer: Signer | Sequence[Signer] | None = None,
        base_url: str | None = None,
        sandbox: bool = False,
        api_version: str | None = None,
        timeouts: Timeouts | float | None = None,
        retry: RetryPolicy | None = None,
        pool_size: int = 100,
        pool_size_per_host: int = 0,
        max_in_flight: int | None = None,
        refresh_margin: float = 300.0,
        token_cache_size: int = 10_000,
        token_cache: TokenCache | None = None,
        idempotency_store: IdempotencyStore | None = None,
        backoff: BackoffStore | None = None,
        transport: Transport | None = None,
        ssl: Any = None,
        ca_file: str | os.PathLike[str] | None = None,
        allow_insecure_http: bool = False,
        user_agent: str | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
        on_request: RequestHook | None = None,
        on_response: ResponseHook | None = None,
        env: bool = True,
    ) -> None:
        settings = resolve_settings(
            app_id=app_id,
            private_key=private_key,
            private_key_path=private_key_path,
            private_key_password=private_key_password,
            signer=signer,
            base_url=base_url,
            sandbox=sandbox,
            api_version=api_version,
            ssl=ssl,
            ca_file=ca_file,
            env=env,
            timeouts=timeouts,
            retry=retry,
            pool_size=pool_size,
            pool_size_per_host=pool_size_per_host,
            max_in_flight=max_in_flight,
            refresh_margin=refresh_margin,
            token_cache_size=token_cache_size,
            user_agent=user_agent,
            allow_insecure_http=allow_insecure_http,
        )
        self.app_id: str = settings.app_id
        self.config = config = settings.config
        signers = settings.signers
        if token_cache is not None and not isinstance(token_cache, TokenCache):
            raise ConfigurationError("token_cache must implement the TokenCache protocol")
        if idempotency_store is not None and not isinstance(idempotency_store, IdempotencyStore):
            raise ConfigurationError(
                "idempotency_store must implement the IdempotencyStore protocol"
            )
        if backoff is not None and not isinstance(backoff, BackoffStore):
            raise ConfigurationError("backoff must implement the BackoffStore protocol")
        if transport is not None:
            if not isinstance(transport, Transport):
                raise ConfigurationError("transport must implement the Transport protocol")
            if trace_configs or ssl is not None or ca_file is not None:
                raise ConfigurationError(
                    "trace_configs=, ssl= and ca_file= configure the default transport; "
                    "pass them to AiohttpTransport(...) when you bring your own transport"
                )
        for name, hook in (("on_request", on_request), ("on_response", on_response)):
            if hook is not None and not callable(hook):
                raise ConfigurationError(f"{name} must be callable")

        self._clock: Clock = clock or system_clock
        self._sleep: Sleep = sleep or asyncio.sleep
        self._sync = ClockSync(self._clock)
        self._key: Signer = signers[0]
        self._jwt = AppJWT(self.app_id, signers, self._sync)
        self.stats = ClientStats(max_installations=config.token_cache_size)
        memory = token_cache if isinstance(token_cache, MemoryTokenCache) else None
        # The first signer's fingerprint, fixed for the client's life: tokens stay cached
        # across a rotation (they do not depend on the key that minted them).
        self._cache_prefix = f"{self.app_id}|{config.base_url}|{signers[0].fingerprint}|"
        # The client's own memory cache holds only this client's tokens, so it is keyed by
        # the installation id alone: the string the installation client holds already, so
        # a warm installation costs no key of its own (~190 bytes at 10,000 of them). A
        # memory cache the caller passes may serve several clients, and a shared cache
        # always does: those see the full key.
        self._local_prefix = "" if memory is None else self._cache_prefix
        self._tokens = TokenManager(
            mint=self._mint,
            clock=self._clock,
            refresh_margin=config.refresh_margin,
            # "is None", never "or": an empty cache has len() 0 and would be replaced.
            memory=memory
            if memory is not None
            else MemoryTokenCache(max_entries=config.token_cache_size, clock=self._clock),
            shared=None if memory is not None else token_cache,
            shared_prefix=self._cache_prefix,  # only used with the client's own memory
            stats=self.stats,
        )
        self._transport: Transport = (
            transport
            if transport is not None
            else AiohttpTransport(
                pool_size=config.pool_size,
                pool_size_per_host=config.pool_size_per_host,
                in_flight=config.in_flight_limit,
                timeouts=config.timeouts,
                ssl=config.ssl,
                trace_configs=trace_configs,
            )
        )
        self._closed = False
        self._base_url = config.base_url
        self._jwt_auth = self._auth = JWTAuth(self._jwt, self._sync, self.stats)
        self._app_token_key = self._local_prefix + "@app"  # ids never hold "@"
        # Idempotency keys and pauses belong to the app on one server, not to a key: a key
        # rotation must not forget which actions were sent.
        self._app_scope = f"{self.app_id}|{self._base_url}"
        self._backoff: BackoffStore = (
            backoff if backoff is not None else MemoryBackoffStore(clock=self._clock)
        )
        self._pipeline = Pipeline(
            transport=self._transport,
            headers={
                "Accept": "application/json",
                "User-Agent": config.user_agent,
                "x-icr-api-version": config.api_version,
            },
            retry=config.retry,
            total_timeout=config.timeouts.total,
            backoff=self._backoff,
            app_scope=self._app_scope,
            sync=self._sync,
            stats=self.stats,
            sleep=self._sleep,
            on_request=on_request,
            on_response=on_response,
        )
        self._core = Core(
            pipeline=self._pipeline,
            base_url=self._base_url,
            tokens=self._tokens,
            jwt_auth=self._jwt_auth,
            idempotency=idempotency_store
            if idempotency_store is not None
            else MemoryIdempotencyStore(clock=self._clock),
            app_scope=self._app_scope,
            cache_prefix=self._cache_prefix,
            clock=self._clock,
            total_timeout=config.timeouts.total,
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> AsyncICRClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent; later calls raise ``ClientClosedError``."""
        self._jwt.close()
        if not self._closed:
            self._closed = True
            await self._transport.aclose()

    @property
    def closed(self) -> bool:
        """Whether the client has been closed."""
        return self._closed

    @property
    def key_fingerprint(self) -> str:
        """The SHA-256 fingerprint (base64 of the DER public key) of the key that signs the
        app JWT now: the first signer's, or the next one's after a rotation."""
        return self._jwt.signer.fingerprint

    @property
    def signers(self) -> tuple[Signer, ...]:
        """The JWT signers in rotation order (one ``PrivateKey`` when a PEM was given)."""
        return self._jwt.signers

    @property
    def base_url(self) -> str:
        """The API base URL requests go to."""
        return self._base_url

    @property
    def jwt_signatures(self) -> int:
        """How many app JWTs this client has signed (one per ~8 minutes in steady use)."""
        return self._jwt.signatures

    @property
    def clock_offset(self) -> float:
        """Learned server-minus-local clock difference, in seconds."""
        return self._sync.offset

    def __repr__(self) -> str:
        return f"<AsyncICRClient app_id={self.app_id!r} base_url={self._base_url!r}>"

    # -- tokens --------------------------------------------------------------------------

    def _cache_key(self, installation_id: str) -> str:
        """The key a shared cache (or a memory cache the caller passed) knows a token by."""
        return self._cache_prefix + installation_id

    def _local_key(self, installation_id: str) -> str:
        """The key of the client's own memory cache (see ``_local_prefix``)."""
        return self._local_prefix + installation_id if self._local_prefix else installation_id

    async def _create_token(self, installation_id: str | None) -> Token:
        """``POST`` one new token (installation or, for ``None``, app). The answer's ``Date``
        places its expiry on this machine's clock, the same for a cached token as for one
        ``create_*_token()`` hands out."""
        if installation_id is None:
            path = "/app/accessTokens"
        else:
            path = f"/app/installations/{path_param(installation_id)}/accessTokens"
        request = self._core.build("POST", path, safe=True)
        answer, resp = await self._pipeline.model_and_response(
            AccessTokenAnswer, request, self._jwt_auth
        )
        return token_from_answer(
            answer,
            installation_id=installation_id,
            now=self._clock(),
            server_now=server_time(resp.headers, self._sync.now()),
        )

    async def _mint(self, installation_id: str | None) -> Token:
        """Mint one token for the token manager."""
        return await self._create_token(installation_id)

    # -- app endpoints (app JWT) --------------------------------------------------------

    async def create_app_token(self) -> Token:
        """``POST /app/accessTokens``: a new app access token (not cached; see
        ``app_token_client()`` for a cached one). Its ``expires_at`` is on this machine's
        clock, as for a cached token."""
        return await self._create_token(None)

    async def create_installation_token(self, installation_id: str | int) -> Token:
        """``POST /app/installations/{id}/accessTokens``: a new installation access token,
        of the same type as ``installation(id).get_token()`` returns.

        This always mints and does not cache; to reuse a cached token use
        ``installation(id).get_token()``.
        """
        return await self._create_token(path_param(installation_id))

    async def revoke_token(self, token: str | Token) -> bool:
        """``DELETE /app/installations/token``: revoke an access token (it is the bearer).

        Returns ``True`` when revoked, ``False`` when the server already considered the
        token invalid (a 401), like ``installation(id).revoke()``. The token is dropped from
        this client's cache either way. A masked token (``str(token)``) is refused.
        """
        value = token if isinstance(token, str) else token.token
        key = None
        if isinstance(token, Token) and token.installation_id is not None:
            key = self._local_key(token.installation_id)
        return await self._core.revoke(value, key)

    async def list_installations(self, *, limit: int = 10, page: int = 0) -> Page[Installation]:
        """``GET /app/installations``: one page of the app's active installations."""
        return await self._page(
            Installation, "/app/installations", "installations", limit=limit, page=page
        )

    def iter_installations(
        self, *, page_size: int = 100, start_page: int = 0
    ) -> AsyncIterator[Installation]:
        """Every installation, page by page (``async for inst in client.iter_installations()``).

        Stops on an empty page, a null or absent ``nextPage``, ``currentPage >= pageCount`` or
        all ``total`` items seen; raises ``PaginationError`` if the server repeats a page.
        """
        return self._iterate(
            Installation,
            "/app/installations",
            "installations",
            page_size=page_size,
            start_page=start_page,
        )

    async def get_installation(self, installation_id: str | int) -> Installation:
        """``GET /app/installations/{id}``: one installation. Use it to confirm an
        ``installationId`` received on the install callback before trusting it."""
        return await self._model(
            Installation, "GET", f"/app/installations/{path_param(installation_id)}"
        )

    async def create_user_organization(
        self,
        *,
        email: str,
        organization_name: str,
        organization_type: OrganizationType | str,
        full_name: str | None = None,
        profile_picture: str | None = None,
        country_code: str | None = None,
    ) -> CreatedOrganization:
        """``POST /app/create/user/organization``: create a user and an organization; the app
        is installed on it at once. Not retried automatically (it creates things)."""
        if not isinstance(email, str) or "@" not in email.strip() or len(email.strip()) < 3:
            raise InvalidArgumentError(f"email must be an e-mail address, got {email!r}")
        if not isinstance(organization_name, str) or not organization_name.strip():
            raise InvalidArgumentError("organization_name must not be empty")
        org_type = (
            organization_type.value
            if isinstance(organization_type, OrganizationType)
            else organization_type
        )
        if not isinstance(org_type, str) or not org_type.strip():
            raise InvalidArgumentError("organization_type must not be empty")
        if country_code is not None and (
            not isinstance(country_code, str) or not country_code.isalpha()
        ):
            raise InvalidArgumentError(
                f"country_code must be letters like 'IS', got {country_code!r}"
            )
        user: dict[str, Any] = {"email": email.strip()}
        if full_name is not None:
            user["fullName"] = full_name
        if profile_picture is not None:
            user["profilePicture"] = profile_picture
        organization: dict[str, Any] = {"fullName": organization_name.strip(), "type": org_type}
        if country_code is not None:
            organization["countryCode"] = country_code.upper()
        return await self._model(
            CreatedOrganization,
            "POST",
            "/app/create/user/organization",
            json={"user": user, "organization": organization},
        )

    # -- derived clients ---------------------------------------------------------------

    def installation(self, installation_id: str | int) -> AsyncInstallationClient:
        """A client that acts as one installation, with its token cached and refreshed."""
        return AsyncInstallationClient(self, installation_id)

    def app_token_client(self) -> AsyncAppTokenClient:
        """A client that uses the (cached) app access token, for app-level endpoints such as
        ``/projects``."""
        return AsyncAppTokenClient(self)

    def _token_auth(self, key: str, installation_id: str | None) -> TokenAuth:
        return TokenAuth(
            self._tokens,
            key,
            installation_id,
            sleep=self._sleep,
        )


class AsyncInstallationClient(OrganizationEndpoints):
    """Acts as one installation: every request carries its installation token.

    Derived with ``AsyncICRClient.installation(id)``; shares the parent's transport and
    token cache, so making many of these is cheap.
    """

    __slots__ = ("_parent",)

    def __init__(self, parent: AsyncICRClient, installation_id: str | int) -> None:
        path_param(installation_id)
        self.installation_id: str = str(installation_id)
        self._organization_id = None
        self._parent = parent
        key = parent._local_key(self.installation_id)
        super().__init__(parent._core, key, parent._token_auth(key, self.installation_id))

    @property
    def parent(self) -> AsyncICRClient:
        """The app client this one derives from (it owns the transport)."""
        return self._parent

    def __repr__(self) -> str:
        return (
            f"<AsyncInstallationClient installation_id={self.installation_id!r} "
            f"app_id={self._parent.app_id!r}>"
        )


class AsyncAppTokenClient(ProjectEndpoints):
    """Uses the app access token (cached like installation tokens) for app-level and
    semi-public endpoints such as ``/projects``."""

    __slots__ = ("_parent",)

    def __init__(self, parent: AsyncICRClient) -> None:
        self._parent = parent
        key = parent._app_token_key
        super().__init__(parent._core, key, parent._token_auth(key, None))

    @property
    def parent(self) -> AsyncICRClient:
        """The app client this one derives from (it owns the transport)."""
        return self._parent

    def __repr__(self) -> str:
        return f"<AsyncAppTokenClient app_id={self._parent.app_id!r}>"
