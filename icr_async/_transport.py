"""The transport seam: a small ``Transport`` protocol and its aiohttp implementation.

The pipeline hands a transport one checked ``Request`` and the headers of one attempt, and
gets back a ``Response`` (status, headers, the whole body) or a ``TransportError``. That is
the entire contract, as in httpx (``handle_async_request``) and gidgethub (``_request``): a
test double, a recorder or another HTTP library is one small class, passed as
``AsyncICRClient(transport=...)``.

``AiohttpTransport`` is the default and the only module that touches aiohttp: one session
and connector per client. The session is created lazily inside the running event loop (a
``ClientSession`` made outside its loop breaks on first use) and bound to that loop: using
the client from another loop raises a clear error instead of hanging. After ``os.fork()``
the child never touches the parent's sockets: a new session is made and the inherited one is
abandoned unclosed (closing it would close file descriptors the parent still uses).
"""

from __future__ import annotations

import asyncio
import collections
import ssl as ssl_module
from collections.abc import Mapping, Sequence
from threading import get_ident
from typing import Any, Protocol, runtime_checkable

import aiohttp

from . import _fork
from ._config import Timeouts
from ._request import Request
from ._sansio import loads_json, request_id
from .errors import (
    ClientClosedError,
    ICRError,
    InvalidArgumentError,
    RequestTimeoutError,
    TransportError,
)

__all__ = ["AiohttpTransport", "Response", "Transport"]

_ABANDONED_AFTER_FORK: list[aiohttp.ClientSession] = []
_UNSET: Any = object()


class Response:
    """One HTTP answer: ``status``, ``headers`` (case-insensitive) and the body ``content``.

    ``json()`` parses the body (once; the pipeline has usually parsed it already).
    ``request_id`` is the server's id for the request, for support tickets.
    """

    # A plain slotted class: made once per request, and attrs' frozen __init__ costs more.
    __slots__ = ("_data", "content", "headers", "status")

    status: int
    headers: Mapping[str, str]
    content: bytes

    def __init__(self, status: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status = status
        self.headers = headers
        self.content = content
        self._data: Any = _UNSET

    def json(self) -> Any:
        """The body parsed as JSON (``None`` for an empty body); ``ValueError`` if it is not
        JSON."""
        if self._data is _UNSET:
            self._data = loads_json(self.content) if self.content else None
        return self._data

    @property
    def request_id(self) -> str | None:
        """The server's request id (``x-icr-request-id`` or a gateway's), if it sent one."""
        return request_id(self.headers)

    def __repr__(self) -> str:
        return f"<Response {self.status}, {len(self.content)} bytes>"


@runtime_checkable
class Transport(Protocol):
    """What the client needs from HTTP: send one request, close at the end.

    ``send`` gets the checked ``Request`` (``method``, ``url``, ``query``, ``body``) and the
    full headers of this attempt (the ``Authorization`` included), and returns the whole
    answer, any status. It raises ``RequestTimeoutError`` when ``timeout`` seconds pass
    (``None``: the transport's own default) and ``TransportError`` when no answer came;
    anything else is a bug. It never follows redirects.
    """

    async def send(
        self, request: Request, headers: Mapping[str, str], *, timeout: float | None
    ) -> Response:
        """Send ``request`` with ``headers`` and read the whole answer."""
        ...

    async def aclose(self) -> None:
        """Release connections. Called once, when the client closes."""
        ...


class _Gate:
    """A counting gate for requests in flight: ``asyncio.Semaphore`` without the coroutine
    layers, because it is crossed twice per request. A freed slot is handed straight to the
    oldest waiter, so waiters are served in order."""

    __slots__ = ("free", "waiters")

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def wait(self) -> None:
        """Wait for a slot (called only when none is free)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot arrived as we were cancelled: pass it on
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest live waiter, or to the pool."""
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1


class AiohttpTransport:
    """The default ``Transport``: one aiohttp session with a connection pool, an in-flight
    gate (back-pressure before any timer starts), TLS settings and trace configs."""

    def __init__(
        self,
        *,
        pool_size: int,
        pool_size_per_host: int,
        in_flight: int,
        timeouts: Timeouts,
        ssl: ssl_module.SSLContext | bool | None = None,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        self._pool_size = pool_size
        self._pool_size_per_host = pool_size_per_host
        self._in_flight = in_flight
        self._timeouts = timeouts
        # None: aiohttp's default verification (older aiohttp read ssl=True differently).
        self._ssl = ssl
        self._trace_configs = list(trace_configs)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0  # the thread that ran self._loop when the session was made
        self._gate: _Gate | None = None
        self._fork_generation = _fork.generation
        self._closed = False
        self._default_timeout = self._client_timeout(timeouts.total)

    @property
    def closed(self) -> bool:
        """Whether ``aclose`` was called."""
        return self._closed

    def _client_timeout(self, remaining: float | None) -> aiohttp.ClientTimeout:
        # One timer per attempt: the read limit, capped by what is left of the call's deadline.
        limits = [t for t in (self._timeouts.read, remaining) if t is not None]
        # Only sock_connect, not connect: aiohttp arms a "connect" timer around every pooled
        # connection lookup too, which costs ~5 µs a request; the in-flight gate already
        # keeps requests from waiting on the pool, so opening a socket is what needs a bound.
        return aiohttp.ClientTimeout(
            total=min(limits) if limits else None,
            sock_connect=self._timeouts.connect,
        )

    def _ensure_session(self) -> aiohttp.ClientSession:
        session = self._session
        if (
            session is not None
            and self._loop_thread == get_ident()
            and self._fork_generation == _fork.generation
            and self._loop is not None
            and self._loop.is_running()
        ):
            # The session's loop is running in this thread, so it is the loop running this
            # call (one per thread): the check below without asyncio.get_running_loop(),
            # which makes a getpid() system call on Python 3.10 and 3.11.
            return session
        if self._closed:
            raise ClientClosedError("the client is closed; create a new one")
        loop = asyncio.get_running_loop()
        if self._fork_generation != _fork.generation:
            # Forked child: the inherited session's sockets belong to the parent. Keep the
            # object referenced forever: if it were garbage-collected here, its finaliser
            # would close the parent's connections and warn about an unclosed session.
            if self._session is not None:
                _ABANDONED_AFTER_FORK.append(self._session)
            self._session = None
            self._loop = None
            self._fork_generation = _fork.generation
        session = self._session
        if session is not None:
            if self._loop is not loop:
                if self._loop is not None and self._loop.is_closed():
                    # The loop that owned the session is gone (e.g. asyncio.run ended):
                    # its connections died with it, start afresh on this loop.
                    self._session = None
                else:
                    raise ICRError(
                        "this client is bound to another event loop; create one client per loop "
                        "(or use the blocking ICRClient from threads)"
                    )
            else:
                return session
        connector_options: dict[str, Any] = {}
        if self._ssl is not None:
            connector_options["ssl"] = self._ssl
        connector = aiohttp.TCPConnector(
            limit=self._pool_size,
            limit_per_host=self._pool_size_per_host,
            enable_cleanup_closed=False,
            **connector_options,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._default_timeout,
            trace_configs=self._trace_configs or None,
            raise_for_status=False,
        )
        self._session = session
        self._loop = loop
        self._loop_thread = get_ident()
        self._gate = _Gate(self._in_flight)
        return session

    async def send(
        self, request: Request, headers: Mapping[str, str], *, timeout: float | None
    ) -> Response:
        """Send one request and read the whole body; map every failure to an ``ICRError``."""
        session = self._ensure_session()
        method = request.method
        path = request.path
        client_timeout = self._default_timeout if timeout is None else self._client_timeout(timeout)
        gate = self._gate
        assert gate is not None
        # Back-pressure: past the in-flight limit, requests queue here, before any timer
        # starts, instead of timing out while waiting for a pooled connection.
        if gate.free > 0 and not gate.waiters:
            gate.free -= 1
        else:
            await gate.wait()
        try:
            # Never follow a redirect: a credit action's body must not be re-sent to another
            # host, and a foreign answer must not pass for ICR's. The client turns a 3xx into
            # a RedirectError that names the location.
            pending = session.request(
                method,
                request.url,
                headers=headers,
                params=request.query,
                data=request.body,
                timeout=client_timeout,
                allow_redirects=False,
            )
            if request.body is None:
                # Awaited and released by hand: what ``async with`` does for a request with
                # no body to write, without its four coroutines (its exit also waits for
                # the body writer, which only a request with a body can still be running).
                resp = await pending
                try:
                    body = await resp.read()
                finally:
                    resp.release()
            else:
                async with pending as resp:
                    body = await resp.read()
            return Response(resp.status, resp.headers, body)
        except asyncio.TimeoutError as exc:
            raise RequestTimeoutError("the request timed out", method=method, path=path) from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            err = TransportError(
                f"TLS certificate verification failed for {exc.host}", method=method, path=path
            )
            err.retryable = False
            raise err from exc
        except aiohttp.ClientSSLError as exc:
            err = TransportError("TLS handshake failed", method=method, path=path)
            err.retryable = False
            raise err from exc
        except aiohttp.ClientPayloadError as exc:
            raise TransportError(
                "the response body was cut short", method=method, path=path
            ) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise TransportError(
                "the server closed the connection", method=method, path=path
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise TransportError(
                f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})",
                method=method,
                path=path,
            ) from exc
        except (aiohttp.InvalidURL, ValueError) as exc:
            raise InvalidArgumentError(
                f"invalid request URL or parameters for {method} {path}"
            ) from exc
        except aiohttp.ClientError as exc:
            raise TransportError(
                f"HTTP error: {type(exc).__name__}", method=method, path=path
            ) from exc
        except OSError as exc:
            raise TransportError(
                f"network error: {exc.strerror or exc}", method=method, path=path
            ) from exc
        except (RuntimeError, AttributeError) as exc:
            # Closing the session under an in-flight request surfaces from aiohttp as
            # "Session is closed" or, in older releases, a connector that is already None.
            if self._closed:
                raise ClientClosedError(
                    f"the client was closed while {method} {path} was in flight"
                ) from exc
            raise
        finally:
            if gate.waiters:
                gate.release()
            else:
                gate.free += 1  # release() without its call: nobody is waiting

    async def aclose(self) -> None:
        """Close the session and its connections. Safe to call more than once."""
        self._closed = True
        session, self._session = self._session, None
        if session is None or self._fork_generation != _fork.generation:
            return
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            if self._loop.is_closed():
                return
            # Closing must happen on the session's own loop.
            fut = asyncio.run_coroutine_threadsafe(session.close(), self._loop)
            await asyncio.wrap_future(fut)
            return
        await session.close()

    def info(self) -> dict[str, Any]:
        """Pool settings, for diagnostics."""
        return {"pool_size": self._pool_size, "in_flight": self._in_flight}
