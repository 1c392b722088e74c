"""The asyncio client: the single source of truth for every behaviour of the SDK.

``AsyncICRClient`` speaks for the app (it signs the app JWT) and derives clients that speak
for one installation (``client.installation(id)``) or with the app access token
(``client.app_token_client()``). The blocking ``ICRClient`` in ``icr_async.sync`` runs these
very coroutines on a background loop; nothing here is written twice.

One request goes: credential (cached JWT or token, minted single-flight on a miss) →
transport → on 401, recover once (drop the token and re-mint, or learn the server's clock
and re-sign) → on a retryable failure, wait (backoff with jitter or ``Retry-After``) and try
again, within one deadline for the whole call → decode into a model or raise a typed error.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import aiohttp

from ._backoff import BackoffStore, MemoryBackoffStore, hold
from ._clock import Clock, system_clock
from ._config import (
    DEFAULT_API_VERSION,
    PRODUCTION_URL,
    SANDBOX_URL,
    ClientConfig,
    Timeouts,
)
from ._converters import structure
from ._hooks import RequestEvent, RequestHook, ResponseEvent, ResponseHook, call_hook
from ._idempotency import IdempotencyStore, MemoryIdempotencyStore
from ._jwt import AppJWT, ClockSync
from ._keys import KeySource, load_private_key
from ._organizations import OrganizationEndpoints, ProjectEndpoints
from ._redact import mask_token, redact_headers
from ._retry import RetryPolicy
from ._sansio import (
    PageTracker,
    check_page_args,
    decode_json,
    error_from_response,
    path_param,
    read_pagination,
    request_id,
    server_time,
)
from ._signers import Signer, check_signers
from ._tokens import ClientStats, MemoryTokenCache, TokenCache, TokenManager
from ._transport import RawResponse, Transport
from .errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidArgumentError,
    RequestTimeoutError,
    ResponseDecodeError,
    TransportError,
)
from .models import (
    AppAccessToken,
    CreatedOrganization,
    Installation,
    InstallationAccessToken,
    OrganizationType,
    Page,
    Token,
)

__all__ = ["AsyncAppTokenClient", "AsyncICRClient", "AsyncInstallationClient"]

logger = logging.getLogger("icr_async")

M = TypeVar("M")

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})
# A 401 this soon after a mint is most likely replication lag, not a bad token.
FRESH_TOKEN_WINDOW = 10.0
LAG_RETRY_DELAYS = (0.2, 0.5, 1.0)
_NO_BODY: Any = object()

Sleep = Callable[[float], Awaitable[None]]


class _Auth(Protocol):
    # The installation a credential speaks for (None: the app), e.g. the scope a back-off
    # pauses.
    installation_id: str | None

    async def credential(self) -> str: ...

    async def unauthorized(
        self, credential: str, resp: RawResponse, state: _AttemptState
    ) -> bool: ...


class _AttemptState:
    __slots__ = ("auth_retries", "lag_retries")

    def __init__(self) -> None:
        self.auth_retries = 0
        self.lag_retries = 0


# Words with which a 401 on a JWT blames time (clock skew, expiry), not the key.
_JWT_TIME_WORDS = ("expired", "iat", "exp", "future", "not yet")
# ...or the app itself: another key of the same app cannot help.
_UNKNOWN_APP_RE = re.compile(r"unknown app|\biss\b")


class _JWTAuth:
    """The app JWT. A 401 recovers once: a clock or expiry complaint teaches the server's
    clock and re-signs; a refused key moves to the next signer of a rotation list."""

    __slots__ = ("_client",)
    installation_id: str | None = None

    def __init__(self, client: AsyncICRClient) -> None:
        self._client = client

    async def credential(self) -> str:
        jwt = self._client._jwt
        # The cached JWT is returned without awaiting anything; only a missing or expiring
        # one from a remote signer (HSM, KMS) makes the caller wait.
        token = jwt.peek()
        if token is None:
            token = await jwt.get()
        return token

    async def unauthorized(self, credential: str, resp: RawResponse, state: _AttemptState) -> bool:
        if state.auth_retries >= 1:
            return False
        client = self._client
        jwt = client._jwt
        learned = client._sync.learn(resp.headers.get("Date"))
        if learned:
            client.stats.clock_skew_corrections += 1
        message = resp.body[:500].decode("utf-8", "replace").lower()
        about_time = any(word in message for word in _JWT_TIME_WORDS)
        if credential == jwt.current:
            # A learned clock with a vague message is a clock problem, not a reason to
            # abandon a key; a message that names the signature is about the key anyway.
            key_refused = (
                not about_time
                and _UNKNOWN_APP_RE.search(message) is None
                and (not learned or "signature" in message)
            )
            if not (key_refused and jwt.rotate(credential)):
                if not (learned or about_time):
                    # A bad signature with no other key to try: re-signing cannot help.
                    return False
                jwt.invalidate(credential)
        # else: another request already re-signed or rotated; retry with the current JWT.
        state.auth_retries += 1
        return True


class _StaticAuth:
    """A bearer credential given by the caller (revoking a token); never recovered."""

    __slots__ = ("_value",)
    installation_id: str | None = None

    def __init__(self, value: str) -> None:
        self._value = value

    async def credential(self) -> str:
        return self._value

    async def unauthorized(self, credential: str, resp: RawResponse, state: _AttemptState) -> bool:
        return False


class _TokenAuth:
    """A cached installation or app token; a 401 drops it and mints once more."""

    __slots__ = ("_client", "_key", "_last", "installation_id")

    def __init__(self, client: AsyncICRClient, key: str, installation_id: str | None) -> None:
        self._client = client
        self._key = key
        self.installation_id = installation_id
        self._last: Token | None = None

    async def credential(self) -> str:
        tokens = self._client._tokens
        token = tokens.peek_fresh(self._key)
        if token is None:
            token = await tokens.get(self._key, self.installation_id)
        self._last = token
        return token.token

    async def unauthorized(self, credential: str, resp: RawResponse, state: _AttemptState) -> bool:
        client = self._client
        last = self._last
        if (
            not _names_dead_token(resp.body)
            and last is not None
            and last.token == credential
            and client._clock() - last.minted_at < FRESH_TOKEN_WINDOW
            and state.lag_retries < len(LAG_RETRY_DELAYS)
        ):
            # Freshly minted and already refused: give replication a moment, same token.
            delay = LAG_RETRY_DELAYS[state.lag_retries]
            state.lag_retries += 1
            logger.debug(
                "401 for a token minted %.1f s ago; retrying in %.1f s",
                client._clock() - last.minted_at,
                delay,
            )
            await client._sleep(delay)
            return True
        if state.auth_retries >= 1:
            return False
        state.auth_retries += 1
        client.stats.recoveries_401 += 1
        logger.info(
            "the server refused the cached token %s for %s; minting a new one",
            mask_token(credential),
            f"installation {self.installation_id}" if self.installation_id else "the app",
        )
        await client._tokens.invalidate(self._key, credential)
        return True


# Words with which a 401 says the token itself is dead (not merely unknown yet to a replica).
_DEAD_TOKEN_RE = re.compile(rb"revoked|invalid|expired", re.IGNORECASE)


def _names_dead_token(body: bytes) -> bool:
    """Whether a 401's body says the token was revoked, is invalid or expired.

    Such a token will never work, so waiting for replication would only delay the re-mint
    (three retries, ~1.7 s); a 401 that names nothing is still given that grace.
    """
    return _DEAD_TOKEN_RE.search(body[:500]) is not None


# One scan for everything a caller-supplied path must not contain: a scheme or authority
# ("://", a leading "//"), backslashes, whitespace or control characters, "." / ".." segments
# (also percent-encoded: yarl would decode and resolve "%2e%2e").
_BAD_PATH_RE = re.compile(r"://|\\|[\x00-\x20\x7f]|/(?:\.|%2e){1,2}(?:/|$)", re.IGNORECASE)


def _check_path(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        raise InvalidArgumentError(
            f"path must be an absolute API path like '/organizations/ID', got {path!r}"
        )
    bad = _BAD_PATH_RE.search(path)
    if bad is not None:
        if bad.group(0).startswith("/"):
            raise InvalidArgumentError(f"path {path!r} must not contain '.' or '..' segments")
        raise InvalidArgumentError(
            f"path {path!r} contains characters that are not allowed in a path"
        )
    return path


def _check_method(method: str) -> str:
    upper = method.upper() if isinstance(method, str) else ""
    if upper not in _METHODS:
        raise InvalidArgumentError(f"unsupported HTTP method {method!r}")
    return upper


def _params(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not params:
        return None
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[str(key)] = "true" if value else "false"
        else:
            out[str(key)] = str(value)
    return out


class AsyncICRClient:
    """The ICR Apps API for one app, on asyncio.

    Use it as ``async with AsyncICRClient(app_id, private_key) as client:`` or close it with
    ``await client.aclose()``. Credentials come from the arguments or the environment
    (``ICR_APP_ID``, ``ICR_PRIVATE_KEY`` with PEM text, ``ICR_PRIVATE_KEY_PATH``), or, for a
    key that never enters the process, ``signer=`` (an HSM or KMS ``Signer``; a list of
    signers is a key rotation: the first signs, and when ICR refuses its key the next is
    tried once and kept); settings
    from the arguments, then ``ICR_BASE_URL`` / ``ICR_API_VERSION``. Every mistake in them
    raises ``ConfigurationError`` here, not on the first request.

    One aiohttp session (made lazily inside the running loop) serves every request of this
    client and of the installation clients derived from it. A client belongs to the event
    loop it first runs on.

    A fleet of workers shares what one process would keep to itself through three optional
    stores (e.g. from ``icr_async.contrib.redis``): ``token_cache=`` (installation tokens),
    ``idempotency_store=`` (credit actions sent with an ``idempotency_key``; default: this
    process's memory) and ``backoff=`` (pauses after a 429 / 503 with ``Retry-After``;
    default: shared by this process's requests).
    """

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
        if app_id is None and env:
            app_id = os.environ.get("ICR_APP_ID")
        if app_id is None:
            raise ConfigurationError("no app id: pass app_id= or set ICR_APP_ID")
        if isinstance(app_id, bool) or not isinstance(app_id, (str, int)):
            raise ConfigurationError(f"app_id must be a string, got {type(app_id).__name__}")
        app_id = str(app_id).strip()
        if not app_id:
            raise ConfigurationError("app_id is empty")
        if any(c.isspace() for c in app_id) or len(app_id) > 200:
            raise ConfigurationError("app_id must be the app's id (a UUID), without spaces")
        self.app_id: str = app_id
        signers: tuple[Signer, ...]
        if signer is not None:
            given = [
                name
                for name, value in (
                    ("private_key", private_key),
                    ("private_key_path", private_key_path),
                    ("private_key_password", private_key_password),
                )
                if value is not None
            ]
            if given:
                raise ConfigurationError(
                    f"pass either signer= or {'/'.join(f'{n}=' for n in given)}, not both "
                    "(a PrivateKey is a signer: list it in signer= to rotate keys)"
                )
            signers = check_signers(signer)
        else:
            signers = (
                load_private_key(
                    private_key, path=private_key_path, password=private_key_password, env=env
                ),
            )

        if base_url is not None and sandbox:
            raise ConfigurationError("pass either base_url or sandbox=True, not both")
        if base_url is None:
            # An empty ICR_BASE_URL counts as unset; an explicit base_url="" is an error below.
            base_url = (
                SANDBOX_URL
                if sandbox
                else ((os.environ.get("ICR_BASE_URL") or None) if env else None)
            )
        if api_version is None:
            api_version = (
                os.environ.get("ICR_API_VERSION") if env else None
            ) or DEFAULT_API_VERSION
        if ssl is not None and ca_file is not None:
            raise ConfigurationError("pass either ssl= or ca_file=, not both")
        if ca_file is not None:
            import ssl as ssl_module

            try:
                ssl = ssl_module.create_default_context(cafile=os.fspath(ca_file))
            except (OSError, ssl_module.SSLError) as exc:
                raise ConfigurationError(
                    f"cannot load CA file {os.fspath(ca_file)}: {exc}"
                ) from None
        self.config = ClientConfig(
            base_url=PRODUCTION_URL if base_url is None else base_url,
            api_version=api_version,
            timeouts=timeouts,
            retry=retry,
            pool_size=pool_size,
            pool_size_per_host=pool_size_per_host,
            max_in_flight=max_in_flight,
            refresh_margin=refresh_margin,
            token_cache_size=token_cache_size,
            user_agent=user_agent or ClientConfig().user_agent,
            allow_insecure_http=allow_insecure_http,
            ssl=ssl,
        )
        if token_cache is not None and not isinstance(token_cache, TokenCache):
            raise ConfigurationError("token_cache must implement the TokenCache protocol")
        if idempotency_store is not None and not isinstance(idempotency_store, IdempotencyStore):
            raise ConfigurationError(
                "idempotency_store must implement the IdempotencyStore protocol"
            )
        if backoff is not None and not isinstance(backoff, BackoffStore):
            raise ConfigurationError("backoff must implement the BackoffStore protocol")
        for name, hook in (("on_request", on_request), ("on_response", on_response)):
            if hook is not None and not callable(hook):
                raise ConfigurationError(f"{name} must be callable")

        self._clock: Clock = clock or system_clock
        self._sleep: Sleep = sleep or asyncio.sleep
        self._sync = ClockSync(self._clock)
        self._key: Signer = signers[0]
        self._jwt = AppJWT(self.app_id, signers, self._sync)
        self.stats = ClientStats()
        memory = token_cache if isinstance(token_cache, MemoryTokenCache) else None
        self._tokens = TokenManager(
            mint=self._mint,
            clock=self._clock,
            refresh_margin=self.config.refresh_margin,
            memory=memory
            or MemoryTokenCache(max_entries=self.config.token_cache_size, clock=self._clock),
            shared=None if memory is not None else token_cache,
            stats=self.stats,
        )
        self._transport = Transport(
            pool_size=self.config.pool_size,
            pool_size_per_host=self.config.pool_size_per_host,
            in_flight=self.config.in_flight_limit,
            timeouts=self.config.timeouts,
            ssl=self.config.ssl,
            trace_configs=trace_configs,
        )
        self._on_request = on_request
        self._on_response = on_response
        self._base_url = self.config.base_url
        self._base_headers = {
            "Accept": "application/json",
            "User-Agent": self.config.user_agent,
            "x-icr-api-version": self.config.api_version,
        }
        self._jwt_auth = _JWTAuth(self)
        # The first signer's fingerprint, fixed for the client's life: tokens stay cached
        # across a rotation (they do not depend on the key that minted them).
        self._cache_prefix = f"{self.app_id}|{self._base_url}|{signers[0].fingerprint}|"
        self._app_token_key = self._cache_prefix + "@app"
        # Idempotency keys and pauses belong to the app on one server, not to a key: a key
        # rotation must not forget which actions were sent.
        self._app_scope = f"{self.app_id}|{self._base_url}"
        self._idempotency: IdempotencyStore = idempotency_store or MemoryIdempotencyStore(
            clock=self._clock
        )
        self._backoff: BackoffStore = backoff or MemoryBackoffStore(clock=self._clock)

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> AsyncICRClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent; later calls raise ``ClientClosedError``."""
        self._jwt.close()
        await self._transport.aclose()

    @property
    def closed(self) -> bool:
        """Whether the client has been closed."""
        return self._transport.closed

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

    # -- the request pipeline ----------------------------------------------------------

    def _cache_key(self, installation_id: str) -> str:
        return self._cache_prefix + installation_id

    async def _send(
        self,
        method: str,
        path: str,
        *,
        auth: _Auth,
        params: Mapping[str, Any] | None = None,
        json: Any = _NO_BODY,
        safe: bool,
        retry: bool | None = None,
        decode: bool = False,
    ) -> RawResponse:
        """Send with auth recovery and retries; return a 2xx answer or raise.

        With ``decode`` the body is parsed as JSON inside the loop (into ``resp.data``), so a
        safe request whose 2xx body is not JSON (a gateway's HTML page) is tried once more.
        A 3xx is an error: redirects are never followed.
        """
        url = self._base_url + path
        query = _params(params)
        if json is _NO_BODY:
            data: bytes | None = None
            headers_base = self._base_headers
        else:
            try:
                data = jsonlib.dumps(json, separators=(",", ":"), allow_nan=False).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(
                    f"the request body for {method} {path} is not JSON-serialisable: {exc}"
                ) from None
            headers_base = {**self._base_headers, "Content-Type": "application/json"}
        policy = self.config.retry
        may_retry = safe if retry is None else retry
        total = self.config.timeouts.total
        loop = asyncio.get_running_loop()
        deadline = None if total is None else loop.time() + total
        state: _AttemptState | None = None
        attempt = 0
        failures = 0
        decode_retried = False
        hooks = self._on_request is not None or self._on_response is not None
        backoff = self._backoff
        while True:
            attempt += 1
            if backoff.active:
                # Only while a pause is known (or a fleet rate is on): a dict lookup otherwise.
                await hold(
                    backoff,
                    self._app_scope,
                    auth.installation_id,
                    sleep=self._sleep,
                    deadline=deadline,
                    max_wait=policy.max_retry_after,
                    method=method,
                    path=path,
                )
            credential = await auth.credential()
            headers = dict(headers_base)
            headers["Authorization"] = "Bearer " + credential
            # The first attempt runs under the session's default timeout (no per-request
            # timer object); later ones get what is left of the call's deadline.
            remaining = None
            if deadline is not None and attempt > 1:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise RequestTimeoutError(
                        f"the call's {total:g} s deadline passed after {attempt - 1} attempt(s)",
                        method=method,
                        path=path,
                    )
            if hooks:
                started = loop.time()
                if self._on_request is not None:
                    await call_hook(
                        self._on_request,  # type: ignore[arg-type]
                        RequestEvent(
                            method=method,
                            path=path,
                            url=url,
                            headers=redact_headers(headers),
                            attempt=attempt,
                        ),
                    )
            self.stats.requests += 1
            try:
                resp = await self._transport.send(
                    method,
                    url,
                    path=path,
                    headers=headers,
                    params=query,
                    data=data,
                    total_timeout=remaining,
                )
            except TransportError as exc:
                if hooks and self._on_response is not None:
                    await call_hook(
                        self._on_response,  # type: ignore[arg-type]
                        ResponseEvent(
                            method=method,
                            path=path,
                            url=url,
                            status=None,
                            headers={},
                            attempt=attempt,
                            elapsed=loop.time() - started,
                            error=type(exc).__name__,
                        ),
                    )
                failures += 1
                if not (may_retry and exc.retryable and failures < policy.attempts):
                    raise
                if isinstance(exc, RequestTimeoutError) and not policy.retry_on_timeout:
                    raise
                if (
                    not isinstance(exc, RequestTimeoutError)
                    and not policy.retry_on_connection_error
                ):
                    raise
                await self._wait(policy.backoff(failures), deadline, loop, exc)
                continue
            if hooks and self._on_response is not None:
                await call_hook(
                    self._on_response,  # type: ignore[arg-type]
                    ResponseEvent(
                        method=method,
                        path=path,
                        url=url,
                        status=resp.status,
                        headers=redact_headers(resp.headers),
                        attempt=attempt,
                        elapsed=loop.time() - started,
                        request_id=request_id(resp.headers),
                    ),
                )
            status = resp.status
            if status < 300:
                if not decode:
                    return resp
                try:
                    resp.data = decode_json(
                        status, resp.headers, resp.body, method=method, path=path
                    )
                except ResponseDecodeError as exc:
                    # A 2xx that is not JSON is a proxy's page more often than ICR's answer:
                    # worth one more try when the request is safe to repeat, never more.
                    failures += 1
                    if not (
                        may_retry
                        and policy.retry_invalid_json
                        and not decode_retried
                        and failures < policy.attempts
                    ):
                        raise
                    decode_retried = True
                    await self._wait(policy.backoff(failures), deadline, loop, exc)
                    continue
                return resp
            if status == 401:
                if state is None:
                    state = _AttemptState()
                if await auth.unauthorized(credential, resp, state):
                    continue
            error = error_from_response(
                status,
                resp.headers,
                resp.body,
                method=method,
                path=path,
                now=self._sync.now(),
            )
            if error.retry_after is not None and status in (429, 503):
                # Every request sharing the store waits too, not only this one's retry.
                await backoff.pause(self._app_scope, auth.installation_id, error.retry_after)
            failures += 1
            if not (may_retry and policy.retries_status(status) and failures < policy.attempts):
                raise error
            wait = error.retry_after
            if wait is not None:
                if wait > policy.max_retry_after:
                    raise error
            else:
                wait = policy.backoff(failures)
            await self._wait(wait, deadline, loop, error)

    async def _wait(
        self,
        delay: float,
        deadline: float | None,
        loop: asyncio.AbstractEventLoop,
        error: Exception,
    ) -> None:
        if deadline is not None and loop.time() + delay > deadline:
            raise error
        self.stats.retries += 1
        logger.info("retrying after %s in %.2f s", type(error).__name__, delay)
        await self._sleep(delay)

    async def _json(
        self,
        method: str,
        path: str,
        *,
        auth: _Auth,
        params: Mapping[str, Any] | None = None,
        json: Any = _NO_BODY,
        safe: bool,
        retry: bool | None = None,
    ) -> Any:
        resp = await self._send(
            method, path, auth=auth, params=params, json=json, safe=safe, retry=retry, decode=True
        )
        return resp.data

    async def _model(
        self,
        cls: type[M],
        method: str,
        path: str,
        *,
        auth: _Auth,
        safe: bool,
        json: Any = _NO_BODY,
        retry: bool | None = None,
    ) -> M:
        data = await self._json(method, path, auth=auth, safe=safe, json=json, retry=retry)
        return structure(data, cls, method=method, path=path)

    async def _page(
        self,
        cls: type[M],
        path: str,
        key: str,
        *,
        auth: _Auth,
        limit: int,
        page: int,
        params: Mapping[str, Any] | None = None,
    ) -> Page[M]:
        limit, page = check_page_args(limit, page)
        query = {**(params or {}), "limit": limit, "page": page}
        data = await self._json("GET", path, auth=auth, params=query, safe=True)
        items, pagination = read_pagination(data, key, method="GET", path=path)
        return Page(
            items=tuple(structure(item, cls, method="GET", path=path) for item in items),
            pagination=pagination,
            page=page,
            limit=limit,
        )

    async def _iterate(
        self,
        cls: type[M],
        path: str,
        key: str,
        *,
        auth: _Auth,
        page_size: int,
        start_page: int,
        params: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[M]:
        page_size, start_page = check_page_args(page_size, start_page)
        tracker = PageTracker(limit=page_size, start_page=start_page)
        while True:
            query = {**(params or {}), "limit": page_size, "page": tracker.page}
            data = await self._json("GET", path, auth=auth, params=query, safe=True)
            items, pagination = read_pagination(data, key, method="GET", path=path)
            more = tracker.advance(items, pagination)
            for item in items:
                yield structure(item, cls, method="GET", path=path)
            if not more:
                return

    def _local_expiry(self, expires_at: float, headers: Mapping[str, str]) -> float:
        """Turn the server's ``expiresAt`` into this machine's clock."""
        return self._clock() + (expires_at - server_time(headers, self._sync.now()))

    async def _mint(self, installation_id: str | None) -> Token:
        """Mint one token (installation or, for ``None``, app) for the token manager."""
        if installation_id is None:
            path = "/app/accessTokens"
            cls: type[AppAccessToken | InstallationAccessToken] = AppAccessToken
        else:
            path = f"/app/installations/{installation_id}/accessTokens"
            cls = InstallationAccessToken
        resp = await self._send("POST", path, auth=self._jwt_auth, safe=True, decode=True)
        minted = structure(resp.data, cls, method="POST", path=path)
        return Token(
            token=minted.token,
            expires_at=self._local_expiry(minted.expires_at.timestamp(), resp.headers),
            installation_id=installation_id,
            organization_id=getattr(minted, "organization_id", None),
            minted_at=self._clock(),
        )

    # -- app endpoints (app JWT) --------------------------------------------------------

    async def create_app_token(self) -> AppAccessToken:
        """``POST /app/accessTokens``: a new app access token (not cached; see
        ``app_token_client()`` for a cached one)."""
        return await self._model(
            AppAccessToken, "POST", "/app/accessTokens", auth=self._jwt_auth, safe=True
        )

    async def create_installation_token(
        self, installation_id: str | int
    ) -> InstallationAccessToken:
        """``POST /app/installations/{id}/accessTokens``: a new installation access token.

        This always mints; to reuse a cached token use ``installation(id).get_token()``.
        """
        enc = path_param(installation_id)
        return await self._model(
            InstallationAccessToken,
            "POST",
            f"/app/installations/{enc}/accessTokens",
            auth=self._jwt_auth,
            safe=True,
        )

    async def revoke_token(
        self, token: str | Token | AppAccessToken | InstallationAccessToken
    ) -> bool:
        """``DELETE /app/installations/token``: revoke an access token (it is the bearer).

        Returns the server's answer (``True``). The token is dropped from this client's cache
        if it was there.
        """
        value = token if isinstance(token, str) else token.token
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
            raise InvalidArgumentError("token to revoke must be a non-empty access token string")
        result = await self._json(
            "DELETE", "/app/installations/token", auth=_StaticAuth(value), safe=True
        )
        self._tokens.memory.discard_token(value)
        return bool(result) if result is not None else True

    async def list_installations(self, *, limit: int = 10, page: int = 0) -> Page[Installation]:
        """``GET /app/installations``: one page of the app's active installations."""
        return await self._page(
            Installation,
            "/app/installations",
            "installations",
            auth=self._jwt_auth,
            limit=limit,
            page=page,
        )

    def iter_installations(
        self, *, page_size: int = 100, start_page: int = 0
    ) -> AsyncIterator[Installation]:
        """Every installation, page by page (``async for inst in client.iter_installations()``).

        Stops on an empty page, a null or absent ``nextPage``, ``currentPage >= pageCount`` or
        all ``total`` items seen; raises ``PaginationError`` if the server repeats a page.
        """
        check_page_args(page_size, start_page)
        return self._iterate(
            Installation,
            "/app/installations",
            "installations",
            auth=self._jwt_auth,
            page_size=page_size,
            start_page=start_page,
        )

    async def get_installation(self, installation_id: str | int) -> Installation:
        """``GET /app/installations/{id}``: one installation. Use it to confirm an
        ``installationId`` received on the install callback before trusting it."""
        enc = path_param(installation_id)
        return await self._model(
            Installation, "GET", f"/app/installations/{enc}", auth=self._jwt_auth, safe=True
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
            auth=self._jwt_auth,
            safe=False,
            json={"user": user, "organization": organization},
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = _NO_BODY,
        retry: bool | None = None,
    ) -> Any:
        """Any call authenticated with the app JWT (the ``/app/...`` endpoints); returns the
        decoded JSON. Only GET/HEAD are retried unless ``retry=True``."""
        method = _check_method(method)
        path = _check_path(path)
        return await self._json(
            method,
            path,
            auth=self._jwt_auth,
            params=params,
            json=json,
            safe=method in _SAFE_METHODS,
            retry=retry,
        )

    # -- derived clients ---------------------------------------------------------------

    def installation(self, installation_id: str | int) -> AsyncInstallationClient:
        """A client that acts as one installation, with its token cached and refreshed."""
        return AsyncInstallationClient(self, installation_id)

    def app_token_client(self) -> AsyncAppTokenClient:
        """A client that uses the (cached) app access token, for app-level endpoints such as
        ``/projects``."""
        return AsyncAppTokenClient(self)


class _TokenScopedClient:
    """What installation and app-token clients share: a cached token on every request."""

    _installation_id: str | None

    def __init__(self, parent: AsyncICRClient, key: str, installation_id: str | None) -> None:
        self._parent = parent
        self._key = key
        self._installation_id = installation_id
        self._auth = _TokenAuth(parent, key, installation_id)

    @property
    def parent(self) -> AsyncICRClient:
        """The app client this one derives from (it owns the connection pool)."""
        return self._parent

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = _NO_BODY,
        retry: bool | None = None,
    ) -> Any:
        """Call any endpoint with this token and return the decoded JSON.

        GET and HEAD are retried on transient failures; other methods only with
        ``retry=True`` — a credit action repeated is a credit action done twice.
        """
        method = _check_method(method)
        path = _check_path(path)
        return await self._parent._json(
            method,
            path,
            auth=self._auth,
            params=params,
            json=json,
            safe=method in _SAFE_METHODS,
            retry=retry,
        )

    async def request_raw(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = _NO_BODY,
        retry: bool | None = None,
    ) -> bytes:
        """Like ``request`` but returns the body bytes undecoded (e.g. a retirement PDF)."""
        method = _check_method(method)
        path = _check_path(path)
        resp = await self._parent._send(
            method,
            path,
            auth=self._auth,
            params=params,
            json=json,
            safe=method in _SAFE_METHODS,
            retry=retry,
        )
        return resp.body

    async def get_token(self, *, min_ttl: float | None = None) -> Token:
        """A token that lives at least ``min_ttl`` seconds more (and always more than the
        refresh margin), minted only if the cached one does not."""
        if min_ttl is not None and (
            isinstance(min_ttl, bool) or not isinstance(min_ttl, (int, float)) or min_ttl < 0
        ):
            raise InvalidArgumentError(f"min_ttl must be a number of seconds >= 0, got {min_ttl!r}")
        return await self._parent._tokens.get(self._key, self._installation_id, min_ttl=min_ttl)

    async def revoke(self) -> bool:
        """Revoke the cached token server-side and drop it. ``False`` if none was cached or
        the server already considered it invalid."""
        cached = self._parent._tokens.memory.peek(self._key)
        if cached is None:
            return False
        try:
            result = await self._parent._json(
                "DELETE", "/app/installations/token", auth=_StaticAuth(cached.token), safe=True
            )
        except AuthenticationError:
            result = False
        finally:
            await self._parent._tokens.invalidate(self._key, cached.token)
        return bool(result) if result is not None else True

    # shared by typed endpoint methods
    async def _model(
        self,
        cls: type[M],
        method: str,
        path: str,
        *,
        json: Any = _NO_BODY,
        retry: bool | None = None,
    ) -> M:
        return await self._parent._model(
            cls, method, path, auth=self._auth, safe=method in _SAFE_METHODS, json=json, retry=retry
        )

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
        return await self._parent._page(
            cls, path, key, auth=self._auth, limit=limit, page=page, params=params
        )

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
        return self._parent._iterate(
            cls,
            path,
            key,
            auth=self._auth,
            page_size=page_size,
            start_page=start_page,
            params=params,
        )


class AsyncInstallationClient(OrganizationEndpoints, _TokenScopedClient):
    """Acts as one installation: every request carries its installation token.

    Derived with ``AsyncICRClient.installation(id)``; shares the parent's connection pool and
    token cache, so making many of these is cheap.
    """

    def __init__(self, parent: AsyncICRClient, installation_id: str | int) -> None:
        path_param(installation_id)
        self.installation_id: str = str(installation_id)
        self._organization_id: str | None = None
        super().__init__(parent, parent._cache_key(self.installation_id), self.installation_id)

    async def organization_id(self) -> str:
        """The id of the organization this installation belongs to (from its token)."""
        # An installation never changes organization: learn it once, not on every typed call
        # (each would otherwise look up the token before the request looks it up again).
        if self._organization_id is not None:
            return self._organization_id
        token = await self.get_token()
        organization_id = token.organization_id
        if organization_id is None:
            inst = await self._parent.get_installation(self.installation_id)
            if inst.organization is None:
                raise ResponseDecodeError(
                    "the installation has no organization id", field="organizationId"
                )
            organization_id = inst.organization.id
        self._organization_id = organization_id
        return organization_id

    def __repr__(self) -> str:
        return f"<AsyncInstallationClient installation_id={self.installation_id!r} app_id={self._parent.app_id!r}>"


class AsyncAppTokenClient(ProjectEndpoints, _TokenScopedClient):
    """Uses the app access token (cached like installation tokens) for app-level and
    semi-public endpoints such as ``/projects``."""

    def __init__(self, parent: AsyncICRClient) -> None:
        super().__init__(parent, parent._app_token_key, None)

    def __repr__(self) -> str:
        return f"<AsyncAppTokenClient app_id={self._parent.app_id!r}>"
