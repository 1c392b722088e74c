"""The request pipeline: the one loop that sends a ``Request`` until it succeeds or fails.

One attempt goes: wait out a shared back-off (if one is known) → the credential (cached JWT
or token, minted single-flight on a miss) → the transport → on 401, let the credential
strategy recover once (re-sign, rotate, re-mint) → on a failure that may be repeated, ask
``RetryPolicy.next_delay`` how long to wait, within one deadline for the whole call → a 2xx
decoded (when asked) or a typed error raised. Typed calls, ``request()``, pages, iterators
and minting all come through here; nothing else sends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar, cast

from ._backoff import BackoffStore, hold
from ._converters import fast_structure, structure, structure_all
from ._credentials import AttemptState, Auth
from ._hooks import RequestEvent, RequestHook, ResponseEvent, ResponseHook, call_hook
from ._jwt import ClockSync
from ._redact import redact_headers
from ._request import Request
from ._retry import RetryPolicy
from ._sansio import (
    PageTracker,
    check_page_args,
    decode_json,
    error_from_response,
    read_pagination,
    request_id,
)
from ._tokens import ClientStats
from ._transport import Response, Transport
from .errors import RequestTimeoutError, ResponseDecodeError, TransportError
from .models import Page

__all__ = ["Pipeline"]

logger = logging.getLogger("icr_async")

M = TypeVar("M")
Sleep = Callable[[float], Awaitable[None]]

# What the loop returns for a 2xx: the Response, the Response with its JSON parsed, the JSON
# alone, or (any class) the JSON structured as that class.
_RESPONSE: Any = object()
_DECODED: Any = object()
_JSON: Any = object()


class Pipeline:
    """Sends requests for one client and every installation client derived from it."""

    __slots__ = (
        "_app_scope",
        "_backoff",
        "_headers",
        "_hooks",
        "_json_headers",
        "_last",
        "_on_request",
        "_on_response",
        "_policy",
        "_sleep",
        "_stats",
        "_sync",
        "_total",
        "transport",
    )

    def __init__(
        self,
        *,
        transport: Transport,
        headers: Mapping[str, str],
        retry: RetryPolicy,
        total_timeout: float | None,
        backoff: BackoffStore,
        app_scope: str,
        sync: ClockSync,
        stats: ClientStats,
        sleep: Sleep,
        on_request: RequestHook | None,
        on_response: ResponseHook | None,
    ) -> None:
        self.transport: Transport = transport
        self._headers = dict(headers)
        # Built once: most calls have no body, the others all send JSON.
        self._json_headers = {**headers, "Content-Type": "application/json"}
        # The headers of the last request (base headers, credential, the dict sent): a run
        # of calls with one credential sends one dict, not a copy and a concatenation each.
        # Transports take headers as a read-only Mapping.
        self._last: tuple[dict[str, str], str, dict[str, str]] = ({}, "", {})
        self._policy = retry
        self._total = total_timeout
        self._backoff = backoff
        self._app_scope = app_scope
        self._sync = sync
        self._stats = stats
        self._sleep = sleep
        self._on_request = on_request
        self._on_response = on_response
        self._hooks = on_request is not None or on_response is not None

    def send(
        self, request: Request, auth: Auth, *, decode: bool = False
    ) -> Coroutine[Any, Any, Response]:
        """Send with auth recovery and retries; return a 2xx answer or raise.

        With ``decode`` the body is parsed as JSON inside the loop, so a request that may be
        repeated and whose 2xx body is not JSON (a gateway's HTML page) is tried once more.
        A 3xx is an error: redirects are never followed.
        """
        return self._run(request, auth, _DECODED if decode else _RESPONSE)

    def json(self, request: Request, auth: Auth) -> Coroutine[Any, Any, Any]:
        """The decoded JSON of a successful answer."""
        return self._run(request, auth, _JSON)

    def model(self, cls: type[M], request: Request, auth: Auth) -> Coroutine[Any, Any, M]:
        """The answer structured as ``cls``."""
        return cast("Coroutine[Any, Any, M]", self._run(request, auth, cls))

    # send/json/model are plain functions that hand back the loop's coroutine: a coroutine
    # frame between the caller and the loop is made, and resumed on every wake-up, for
    # every request (python -m benchmarks.bench_instructions counts what that costs).
    async def _run(self, request: Request, auth: Auth, shape: Any) -> Any:
        # Only what the first attempt needs is read up front; the method, path and policy
        # are read again where a failure or a hook needs them.
        headers_base = self._headers if request.body is None else self._json_headers
        total = self._total if request.timeout is None else request.timeout
        # Deadlines on time.monotonic (what asyncio's loop.time() reads): on Python 3.10 and
        # 3.11, asyncio.get_running_loop() makes a getpid() system call every time.
        now = time.monotonic
        deadline = None if total is None else now() + total
        state: AttemptState | None = None
        attempt = 0
        failures = 0
        decode_retried = False
        hooks = self._hooks
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
                    max_wait=self._policy.max_retry_after,
                    method=request.method,
                    path=request.path,
                )
            # The cached credential without a coroutine; only a missing or expiring one waits.
            credential = auth.peek()
            if credential is None:
                credential = await auth.credential()
            last = self._last
            if last[1] is credential and last[0] is headers_base:
                headers = last[2]
            else:
                headers = dict(headers_base)
                headers["Authorization"] = "Bearer " + credential
                self._last = (headers_base, credential, headers)
            # The first attempt of a call without its own timeout runs under the transport's
            # default (no per-request timer object); later ones get what is left.
            remaining = None
            if (attempt > 1 or request.timeout is not None) and deadline is not None:
                remaining = deadline - now()
                if remaining <= 0:
                    raise RequestTimeoutError(
                        f"the call's {total:g} s deadline passed after {attempt - 1} attempt(s)",
                        method=request.method,
                        path=request.path,
                    )
            if hooks:
                started = now()
                if self._on_request is not None:
                    await call_hook(
                        self._on_request,  # type: ignore[arg-type]
                        RequestEvent(
                            method=request.method,
                            path=request.path,
                            url=request.url,
                            headers=redact_headers(headers),
                            attempt=attempt,
                        ),
                    )
            self._stats.requests += 1
            try:
                resp = await self.transport.send(request, headers, timeout=remaining)
            except TransportError as exc:
                if hooks and self._on_response is not None:
                    await self._response_hook(request, None, attempt, now() - started, exc)
                failures += 1
                await self._retry_or_raise(request, exc, failures, deadline)
                continue
            if hooks and self._on_response is not None:
                await self._response_hook(request, resp, attempt, now() - started, None)
            status = resp.status
            if status < 300:
                if shape is _RESPONSE:
                    return resp
                try:
                    data = decode_json(
                        status, resp.headers, resp.content, method=request.method, path=request.path
                    )
                except ResponseDecodeError as exc:
                    # A 2xx that is not JSON is a proxy's page more often than ICR's answer:
                    # worth one more try when the request may be repeated, never more.
                    failures += 1
                    if decode_retried:
                        raise
                    decode_retried = True
                    await self._retry_or_raise(request, exc, failures, deadline)
                    continue
                if shape is _JSON:
                    return data
                if shape is _DECODED:
                    resp._data = data
                    return resp
                return structure(data, shape, method=request.method, path=request.path)
            if status == 401:
                if state is None:
                    state = AttemptState()
                if await auth.unauthorized(credential, resp, state):
                    continue
            error = error_from_response(
                status,
                resp.headers,
                resp.content,
                method=request.method,
                path=request.path,
                now=self._sync.now(),
            )
            if error.retry_after is not None and status in (429, 503):
                # Every request sharing the store waits too, not only this one's retry.
                await backoff.pause(self._app_scope, auth.installation_id, error.retry_after)
            failures += 1
            await self._retry_or_raise(request, error, failures, deadline)

    async def _retry_or_raise(
        self,
        request: Request,
        failure: Exception,
        failures: int,
        deadline: float | None,
    ) -> None:
        """Wait before the next attempt, or raise ``failure`` when there is none."""
        delay = self._policy.next_delay(failure, failures) if request.may_retry else None
        if delay is None or (deadline is not None and time.monotonic() + delay > deadline):
            raise failure
        self._stats.retries += 1
        logger.info("retrying after %s in %.2f s", type(failure).__name__, delay)
        await self._sleep(delay)

    async def _response_hook(
        self,
        request: Request,
        resp: Response | None,
        attempt: int,
        elapsed: float,
        exc: Exception | None,
    ) -> None:
        await call_hook(
            self._on_response,  # type: ignore[arg-type]
            ResponseEvent(
                method=request.method,
                path=request.path,
                url=request.url,
                status=None if resp is None else resp.status,
                headers={} if resp is None else redact_headers(resp.headers),
                attempt=attempt,
                elapsed=elapsed,
                request_id=None if resp is None else request_id(resp.headers),
                error=None if exc is None else type(exc).__name__,
            ),
        )

    async def model_and_response(
        self, cls: type[M], request: Request, auth: Auth
    ) -> tuple[M, Response]:
        """The answer structured as ``cls``, with the response it came from (its headers
        date a minted token)."""
        resp = await self.send(request, auth, decode=True)
        return structure(resp._data, cls, method=request.method, path=request.path), resp

    async def page(
        self, cls: type[M], request: Request, key: str, auth: Auth, *, limit: int, page: int
    ) -> Page[M]:
        """One page of a list endpoint (``request`` carries ``limit`` and ``page``)."""
        data = await self.json(request, auth)
        items, pagination = read_pagination(data, key, method="GET", path=request.path)
        decoded = structure_all(items, cls, method="GET", path=request.path)
        return Page(
            items=tuple(
                decoded
                if decoded is not None
                else [structure(item, cls, method="GET", path=request.path) for item in items]
            ),
            pagination=pagination,
            page=page,
            limit=limit,
        )

    async def iterate(
        self,
        cls: type[M],
        build: Callable[[Mapping[str, Any]], Request],
        key: str,
        auth: Auth,
        *,
        page_size: int,
        start_page: int,
        params: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[M]:
        """Every item of a list endpoint, page by page, the next page chosen by
        ``PageTracker`` (``build`` makes the request for one page's query)."""
        page_size, start_page = check_page_args(page_size, start_page)
        tracker = PageTracker(limit=page_size, start_page=start_page)
        fast = fast_structure(cls)
        while True:
            request = build({**(params or {}), "limit": page_size, "page": tracker.page})
            data = await self.json(request, auth)
            path = request.path
            items, pagination = read_pagination(data, key, method="GET", path=path)
            more = tracker.advance(items, pagination)
            # One item at a time, not the page at once: a page of models alive together
            # with its parsed JSON is past the collector's threshold (700 new objects), and
            # set off a collection per page (~2 us an item). The fast path is called
            # inline: a call to ``structure`` per item was a tenth of a listing's CPU.
            for item in items:
                if fast is not None:
                    try:
                        obj = fast(item, "GET", path)
                    except Exception:  # judged (and named) by structure
                        obj = structure(item, cls, method="GET", path=path)
                else:
                    obj = structure(item, cls, method="GET", path=path)
                yield obj
            if not more:
                return
