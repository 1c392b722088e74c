"""The blocking client: ``ICRClient`` runs the async core's own coroutines on a background loop.

>>> with ICRClient(app_id, private_key_pem) as client:                  # doctest: +SKIP
...     for installation in client.iter_installations():
...         token = client.installation(installation.id).get_token()

Nothing here implements a request. Each public method of ``AsyncICRClient``,
``AsyncInstallationClient`` and ``AsyncAppTokenClient`` has a twin made by one typed line
(``get_installation = _blocking(AsyncICRClient.get_installation)``): the twin builds the very
coroutine the async client would, runs it on the shared loop and waits for its value. Thanks to
``ParamSpec`` mypy sees ``ICRClient.get_installation`` as
``(installation_id: str | int) -> Installation``; a parity test fails when an async method has
no twin or the signatures differ.

The loop
    One asyncio loop per process runs in a daemon thread owned by anyio
    (``start_blocking_portal``), started on the first call of any blocking client and stopped
    when the last client that used it is closed (lease-counted, like anyio's
    ``BlockingPortalProvider``). Each client's aiohttp session is created inside that loop by
    the core's transport. anyio owns the loop's lifecycle only: the per-call path hands the
    coroutine over with ``loop.call_soon_threadsafe`` and waits on a bare lock, which costs
    less than ``asyncio.run_coroutine_threadsafe`` (see ``benchmarks/bench_blocking.py``).

Where it works
    From any thread, including one that runs its own event loop (Jupyter, inside an
    ``async def``): the caller only blocks, it never needs a loop. From the background loop's
    own thread (a hook, a custom ``sleep`` or ``clock``) a blocking call would wait for itself:
    it raises ``BlockingCallError`` instead.

Fork
    An after-fork hook (registered through ``_fork``, where platforms without ``fork`` are
    handled) gives the child fresh loop state, and every call compares the fork generation
    recorded when the client attached to the loop: the child's first call starts
    its own loop, and the core's transport makes a new session there (the parent's sockets are
    abandoned, never closed or read).

Failure and shutdown
    Errors are the async client's own exception objects, re-raised in the calling thread (the
    traceback shows the caller's frames and the coroutine's). Ctrl-C while waiting cancels the
    coroutine on the loop, waits briefly for it to unwind and raises ``KeyboardInterrupt``.
    ``close()`` is idempotent; a call after it raises ``ClientClosedError``. At interpreter exit
    open clients are closed and the loop stopped, so nothing hangs and aiohttp has nothing to
    warn about; a client dropped without ``close()`` is closed when it is garbage-collected.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import inspect
import threading
import weakref
from _thread import allocate_lock, get_ident
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import anyio.from_thread

from . import _fork
from ._compat import deprecated_names
from .client import AsyncAppTokenClient, AsyncICRClient, AsyncInstallationClient, _TokenScopedClient
from .errors import BlockingCallError, ClientClosedError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from types import TracebackType

    from anyio.from_thread import BlockingPortal

    from ._config import ClientConfig
    from ._tokens import ClientStats

__all__ = ["AppTokenClient", "ICRClient", "InstallationClient"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
C = TypeVar("C")
D = TypeVar("D")
S = TypeVar("S")
_Client = TypeVar("_Client", bound="ICRClient")

# How long Ctrl-C waits for the cancelled coroutine to unwind (close its connection) before
# raising KeyboardInterrupt anyway: long enough for aiohttp, short enough to feel immediate.
CANCEL_GRACE = 2.0
# How often a waiting caller checks that the loop is still alive.
LIVENESS_POLL = 1.0
LOOP_THREAD_NAME = "icr-async-loop"


# -- the shared loop ---------------------------------------------------------------------


class _SharedLoop:
    """The process's background loop and its lease count (one instance per process)."""

    __slots__ = ("leases", "lock", "loop", "portal_cm", "thread_id")

    def __init__(self) -> None:
        # Re-entrant: a client collected (and so released) while this thread starts the loop
        # must not deadlock on it.
        self.lock = threading.RLock()
        self.leases = 0
        self.portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread_id = -1

    def acquire(self) -> tuple[asyncio.AbstractEventLoop, int]:
        """Take a lease, starting the loop if nobody holds one."""
        with self.lock:
            if self.portal_cm is None:
                # No name= here: anyio only accepts it from 4.9 on; the thread names itself.
                portal_cm = anyio.from_thread.start_blocking_portal("asyncio")
                portal = portal_cm.__enter__()
                self.loop, self.thread_id = portal.call(_loop_and_thread)
                self.portal_cm = portal_cm
            self.leases += 1
            assert self.loop is not None
            return self.loop, self.thread_id

    def release(self) -> None:
        """Give a lease back; the last one stops the loop (from another thread if need be)."""
        with self.lock:
            if self.leases <= 0:  # already force-stopped at exit
                return
            self.leases -= 1
            if self.leases or self.portal_cm is None:
                return
            portal_cm, self.portal_cm = self.portal_cm, None
            thread_id, self.thread_id = self.thread_id, -1
            self.loop = None
        if get_ident() == thread_id:
            # Stopping joins the loop thread: it cannot be done from that thread itself.
            threading.Thread(
                target=portal_cm.__exit__, args=(None, None, None), daemon=True
            ).start()
        else:
            portal_cm.__exit__(None, None, None)

    def force_stop(self) -> None:
        """Stop the loop whatever the lease count (interpreter exit)."""
        with self.lock:
            portal_cm, self.portal_cm = self.portal_cm, None
            thread_id = self.thread_id
            self.leases = 0
            self.loop = None
            self.thread_id = -1
        if portal_cm is not None and get_ident() != thread_id:
            portal_cm.__exit__(None, None, None)


def _loop_and_thread() -> tuple[asyncio.AbstractEventLoop, int]:
    threading.current_thread().name = LOOP_THREAD_NAME  # so it is recognisable in dumps
    return asyncio.get_running_loop(), get_ident()


_shared = _SharedLoop()
_handles: weakref.WeakSet[_Handle] = weakref.WeakSet()
_inherited: list[object] = []
_closing: set[asyncio.Task[None]] = set()


def _after_fork_in_child() -> None:
    # The parent's loop thread does not exist here, and any lock may have been held by one of
    # the parent's threads at the moment of the fork: start from clean state. Each client
    # notices the new fork generation on its next call and attaches to a new loop.
    global _shared
    # Kept alive for good: collecting the parent's portal would run its shutdown code, which
    # waits forever for a loop thread that does not exist in this process.
    _inherited.append(_shared)
    _shared = _SharedLoop()
    for handle in list(_handles):
        handle.lock = threading.Lock()


_fork.after_fork_in_child(_after_fork_in_child)


# -- one call across threads --------------------------------------------------------------


class _Call:
    """One coroutine handed to the loop: a leaner future than ``concurrent.futures.Future``.

    The caller holds ``done`` locked; the loop releases it when the task ends. A bare lock
    costs one allocation and two C calls, where a ``concurrent.futures.Future`` adds a
    ``Condition``, a waiter lock per ``result()`` and callback chaining in both directions.
    """

    __slots__ = ("coro", "done", "error", "task", "value")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro: Coroutine[Any, Any, Any] | None = coro
        self.done = allocate_lock()
        self.done.acquire()
        self.task: asyncio.Task[Any] | None = None
        self.value: Any = None
        self.error: BaseException | None = None

    def start(self) -> None:
        # On the loop thread. ``coro`` is None when Ctrl-C came before this ran.
        coro, self.coro = self.coro, None
        if coro is None:
            return
        self.task = task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(self.finish)

    def finish(self, task: asyncio.Task[Any]) -> None:
        try:
            self.value = task.result()
        except BaseException as exc:  # handed to the caller's thread as is
            self.error = exc
        self.done.release()

    def cancel(self) -> None:
        # On the loop thread, after Ctrl-C in the caller.
        if self.task is not None:
            self.task.cancel()
            return
        coro, self.coro = self.coro, None
        if coro is not None:  # never started: close it so it is not reported as never awaited
            coro.close()
            self.done.release()


def _wait(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, R]) -> R:
    """Run ``coro`` on ``loop`` (another thread's) and block until it ends."""
    call = _Call(coro)
    done = call.done
    try:
        loop.call_soon_threadsafe(call.start)
    except RuntimeError:  # the loop stopped: the client was closed under our feet
        coro.close()
        raise ClientClosedError("the client is closed; create a new one") from None
    try:
        # A timed wait, so that a loop stopped before it ran our call (another thread closed
        # the last client at that moment) cannot leave us waiting forever. It costs nothing
        # measurable: the timeout only matters for calls that take longer than it.
        while not done.acquire(timeout=LIVENESS_POLL):
            if loop.is_closed():
                _abandon(call)
                raise ClientClosedError("the client was closed while this call was waiting")
    except BaseException:
        # Ctrl-C (or any exception a signal handler raised): cancel the coroutine where it
        # runs, give it a moment to unwind (close its connection), then let the error go on.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(call.cancel)
            done.acquire(timeout=CANCEL_GRACE)
        raise
    error = call.error
    if error is None:
        return call.value  # type: ignore[no-any-return]
    call.error = None  # no cycle through this frame's locals
    if isinstance(error, asyncio.CancelledError):
        # Not our Ctrl-C: the loop was stopped (the last client closed) while this ran.
        raise ClientClosedError("the client was closed while this call was running") from error
    try:
        # The original object: its traceback keeps the coroutine's frames, and raising it here
        # puts the caller's frames in front of them.
        raise error
    finally:
        del error


def _abandon(call: _Call) -> None:
    # The loop is closed, so nothing else can touch ``call`` any more.
    coro, call.coro = call.coro, None
    if coro is not None:
        coro.close()


# -- the per-client handle ----------------------------------------------------------------


class _Handle:
    """What every blocking object derived from one ``ICRClient`` shares: the async client and
    its lease on the loop. The fast path compares the fork generation, then the thread."""

    __slots__ = (
        "__weakref__",
        "closed",
        "core",
        "generation",
        "lock",
        "loop",
        "shared",
        "thread_id",
    )

    def __init__(self, core: AsyncICRClient) -> None:
        self.core = core
        self.lock = threading.Lock()
        self.closed = False
        # generation != _fork.generation means "not attached in this process": before the first call,
        # after close, and in a forked child. One comparison covers all three.
        self.generation = -1
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread_id = -1
        self.shared: _SharedLoop | None = None
        _handles.add(self)

    def run(
        self,
        name: str,
        method: Callable[..., Coroutine[Any, Any, R]],
        target: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> R:
        """Build ``method(target, *args, **kwargs)`` and run it on the loop."""
        if self.generation != _fork.generation:
            self._attach()
        if get_ident() == self.thread_id:
            raise BlockingCallError(
                f"blocking {name}() called on icr-async's own event-loop thread (from a hook, "
                "a custom sleep or clock?): it would wait for itself forever. Use the "
                "async client there: `await client.parent...`, or move the call to another thread."
            )
        loop = self.loop
        assert loop is not None
        return _wait(loop, method(target, *args, **kwargs))

    def _attach(self) -> None:
        with self.lock:
            if self.closed:
                raise ClientClosedError("the client is closed; create a new one")
            generation = _fork.generation
            # Another thread may have attached while we waited for the lock.
            if self.generation == generation:
                return
            # First call in this process (or in this forked child): lease the shared loop.
            # A lease taken in the parent is not given back here; the parent's loop is gone.
            shared = _shared
            self.loop, self.thread_id = shared.acquire()
            self.shared = shared
            self.generation = generation  # published last: the fast path reads it first

    def close(self, *, wait: bool = True) -> None:
        """Close the async client on the loop and give the lease back. Idempotent."""
        on_loop_thread = self.generation == _fork.generation and get_ident() == self.thread_id
        if on_loop_thread and wait:
            raise BlockingCallError(
                "ICRClient.close() called on icr-async's own event-loop thread: "
                "it would wait for itself; close the client from another thread"
            )
        with self.lock:
            if self.closed:
                return
            self.closed = True
            attached = self.generation == _fork.generation
            loop, shared = self.loop, self.shared
            self.generation, self.loop, self.thread_id, self.shared = -1, None, -1, None
        _handles.discard(self)
        if not attached or loop is None or shared is None:
            # Never used in this process: no session here, no lease to give back.
            return
        if not wait or on_loop_thread:
            # Garbage collection, maybe on the loop thread itself: never block.
            _close_later(loop, self.core, shared)
            return
        try:
            _wait(loop, self.core.aclose())
        finally:
            shared.release()


def _close_later(
    loop: asyncio.AbstractEventLoop, core: AsyncICRClient, shared: _SharedLoop
) -> None:
    async def close_then_release() -> None:
        try:
            await core.aclose()
        finally:
            shared.release()

    def start() -> None:
        task = loop.create_task(close_then_release())
        _closing.add(task)  # the loop keeps only a weak reference to its tasks
        task.add_done_callback(_closing.discard)

    try:
        loop.call_soon_threadsafe(start)
    except RuntimeError:  # the loop is already gone
        shared.release()


def _finalize(handle: _Handle) -> None:
    # The ICRClient was garbage-collected without close(): close its session without blocking
    # (this may run in any thread, including the loop's own).
    with contextlib.suppress(Exception):
        handle.close(wait=False)


@atexit.register
def _close_all_at_exit() -> None:
    # Registered at import, so it runs after atexit hooks registered later (which may still use
    # a client). Close what is open, then stop the loop: the daemon thread would otherwise be
    # frozen mid-call and aiohttp would report unclosed sessions.
    for handle in list(_handles):
        with contextlib.suppress(BaseException):
            handle.close()
    with contextlib.suppress(BaseException):
        _shared.force_stop()


# -- typed twins --------------------------------------------------------------------------


class _Bridge:
    """Base of the blocking classes: the async object it forwards to and the shared handle."""

    __slots__ = ("__weakref__", "_core", "_handle")

    _core: Any
    _handle: _Handle

    def _app_client(self) -> ICRClient:
        raise NotImplementedError


def _mapped_signature(method: Callable[..., Any], returns: object) -> inspect.Signature:
    return inspect.signature(method).replace(return_annotation=returns)


def _name_twin(twin: Callable[..., Any], method: Callable[..., Any], returns: object) -> None:
    twin.__name__ = method.__name__
    twin.__qualname__ = method.__qualname__
    twin.__module__ = __name__
    twin.__doc__ = f"Blocking twin of ``{method.__qualname__}``.\n\n{inspect.getdoc(method) or ''}"
    twin.__signature__ = _mapped_signature(method, returns)  # type: ignore[attr-defined]
    twin.__wrapped__ = method  # type: ignore[attr-defined]


def _return_text(method: Callable[..., Any]) -> object:
    return inspect.signature(method).return_annotation


def _blocking(
    method: Callable[Concatenate[C, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[_Bridge, P], R]:
    """The blocking twin of a coroutine method: same parameters, returns the awaited value."""
    if not inspect.iscoroutinefunction(method):
        raise TypeError(f"{method.__qualname__} is not a coroutine function")
    name = method.__name__

    def twin(self: _Bridge, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._handle.run(name, method, self._core, args, kwargs)

    _name_twin(twin, method, _return_text(method))
    return twin


async def _anext(iterator: AsyncIterator[T]) -> T | _End:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _END


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


class _End:
    """The end of an async iterator, returned instead of raising across threads."""


_END = _End()


def _pull(bridge: _Bridge, name: str, iterator: AsyncIterator[T]) -> Iterator[T]:
    """A lazy iterator: each ``next()`` pulls one item through the loop, so a page is fetched
    only when the caller reaches it. Closing it (or dropping it) closes the async iterator."""
    handle = bridge._handle
    finished = False
    try:
        while True:
            try:
                item = handle.run(name, _anext, iterator, (), {})
            except BaseException:
                finished = True  # the async iterator ended with this error (or was cancelled)
                raise
            if isinstance(item, _End):
                finished = True
                return
            yield item
    finally:
        if not finished:
            _close_iterator(handle, name, iterator)


def _close_iterator(handle: _Handle, name: str, iterator: AsyncIterator[Any]) -> None:
    # Stopped early (break, close(), garbage collection): finish the async generator now so
    # its `finally` blocks run. Where that cannot block (the loop thread, a closed client) the
    # loop's own async-generator hooks finalize it when it is collected.
    if handle.closed or handle.generation != _fork.generation or get_ident() == handle.thread_id:
        return
    with contextlib.suppress(Exception):
        handle.run(name, _aclose, iterator, (), {})


def _iterating(
    method: Callable[Concatenate[C, P], AsyncIterator[T]],
) -> Callable[Concatenate[_Bridge, P], Iterator[T]]:
    """The blocking twin of a method returning an async iterator: a lazy plain iterator."""
    name = method.__name__

    def twin(self: _Bridge, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        # Called here, not on the loop: argument checks raise at once, in the caller's frame,
        # and nothing runs on the loop until the first next().
        return _pull(self, name, method(self._core, *args, **kwargs))

    returns = _return_text(method)
    if isinstance(returns, str):
        returns = returns.replace("AsyncIterator[", "Iterator[", 1)
    _name_twin(twin, method, returns)
    return twin


def _derived(
    method: Callable[Concatenate[C, P], D], wrap: Callable[[ICRClient, D], S]
) -> Callable[Concatenate[_Bridge, P], S]:
    """The blocking twin of a method that derives another async client (``installation()``):
    it derives the async one and returns its blocking twin, sharing this client's loop."""

    def twin(self: _Bridge, /, *args: P.args, **kwargs: P.kwargs) -> S:
        return wrap(self._app_client(), method(self._core, *args, **kwargs))

    wrapper_name = getattr(wrap, "__name__", "")
    _name_twin(twin, method, wrapper_name or _return_text(method))
    return twin


class _Forward(Generic[T]):
    """A read-only property forwarded to the async object's property of the same name."""

    def __init__(self, prop: Callable[[Any], T]) -> None:
        fget = prop.fget if isinstance(prop, property) else prop
        assert fget is not None
        self._fget: Callable[[Any], T] = fget
        self.__doc__ = fget.__doc__

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Forward[T]: ...

    @overload
    def __get__(self, obj: _Bridge, owner: type | None = None) -> T: ...

    def __get__(self, obj: _Bridge | None, owner: type | None = None) -> T | _Forward[T]:
        if obj is None:
            return self
        return self._fget(obj._core)


def _same_parameters(
    init: Callable[Concatenate[Any, P], None],
) -> Callable[[Callable[..., None]], Callable[Concatenate[Any, P], None]]:
    """Give an ``__init__(self, *args, **kwargs)`` the parameters of ``init``, for mypy and for
    ``inspect.signature``: one list of options, kept by the async client."""

    def decorate(func: Callable[..., None]) -> Callable[Concatenate[Any, P], None]:
        func.__signature__ = inspect.signature(init)  # type: ignore[attr-defined]
        func.__doc__ = func.__doc__ or init.__doc__
        return func

    return decorate


# -- the blocking classes -----------------------------------------------------------------


class _SyncTokenScopedClient(_Bridge):
    """What the blocking installation and app-token clients share."""

    __slots__ = ("_parent",)

    def __init__(self, parent: ICRClient, core: _TokenScopedClient) -> None:
        self._parent = parent
        self._core = core
        self._handle = parent._handle

    @property
    def parent(self) -> ICRClient:
        """The blocking app client this one derives from (it owns the connection pool)."""
        return self._parent

    def _app_client(self) -> ICRClient:
        return self._parent

    request = _blocking(_TokenScopedClient.request)
    request_raw = _blocking(_TokenScopedClient.request_raw)
    get_token = _blocking(_TokenScopedClient.get_token)
    revoke = _blocking(_TokenScopedClient.revoke)


class InstallationClient(_SyncTokenScopedClient):
    """The blocking twin of ``AsyncInstallationClient``: acts as one installation.

    Get one with ``ICRClient.installation(id)``; it shares the app client's loop, connection
    pool and token cache, so making many is cheap.
    """

    __slots__ = ()

    _core: AsyncInstallationClient

    def __init__(self, parent: ICRClient, core: AsyncInstallationClient) -> None:
        super().__init__(parent, core)

    @property
    def installation_id(self) -> str:
        """The installation this client acts as."""
        return self._core.installation_id

    organization_id = _blocking(AsyncInstallationClient.organization_id)

    # -- the organization, its inventory and credit requests ----------------------------
    get_organization = _blocking(AsyncInstallationClient.get_organization)
    list_addresses = _blocking(AsyncInstallationClient.list_addresses)
    list_retirements = _blocking(AsyncInstallationClient.list_retirements)
    get_retirement_pdf = _blocking(AsyncInstallationClient.get_retirement_pdf)
    get_inventory = _blocking(AsyncInstallationClient.get_inventory)
    list_credit_requests = _blocking(AsyncInstallationClient.list_credit_requests)
    iter_credit_requests = _iterating(AsyncInstallationClient.iter_credit_requests)
    get_credit_request = _blocking(AsyncInstallationClient.get_credit_request)

    # -- credit actions (never retried automatically) -----------------------------------
    create_credit_action = _blocking(AsyncInstallationClient.create_credit_action)
    transfer_credits = _blocking(AsyncInstallationClient.transfer_credits)
    retire_credits = _blocking(AsyncInstallationClient.retire_credits)
    transfer_and_retire_credits = _blocking(AsyncInstallationClient.transfer_and_retire_credits)
    cancel_credits = _blocking(AsyncInstallationClient.cancel_credits)
    forget_action = _blocking(AsyncInstallationClient.forget_action)

    # -- the warehouse and its reservations ---------------------------------------------
    get_warehouse_inventory = _blocking(AsyncInstallationClient.get_warehouse_inventory)
    list_reservations = _blocking(AsyncInstallationClient.list_reservations)
    iter_reservations = _iterating(AsyncInstallationClient.iter_reservations)
    create_reservation = _blocking(AsyncInstallationClient.create_reservation)
    finish_reservation = _blocking(AsyncInstallationClient.finish_reservation)
    cancel_reservation = _blocking(AsyncInstallationClient.cancel_reservation)

    def __repr__(self) -> str:
        return (
            f"<InstallationClient installation_id={self.installation_id!r} "
            f"app_id={self._parent.app_id!r}>"
        )


class AppTokenClient(_SyncTokenScopedClient):
    """The blocking twin of ``AsyncAppTokenClient``: requests carry the cached app access token.

    Get one with ``ICRClient.app_token_client()``.
    """

    __slots__ = ()

    _core: AsyncAppTokenClient

    def __init__(self, parent: ICRClient, core: AsyncAppTokenClient) -> None:
        super().__init__(parent, core)

    list_projects = _blocking(AsyncAppTokenClient.list_projects)
    iter_projects = _iterating(AsyncAppTokenClient.iter_projects)

    def __repr__(self) -> str:
        return f"<AppTokenClient app_id={self._parent.app_id!r}>"


class ICRClient(_Bridge):
    """The ICR Apps API for one app, blocking: the twin of ``AsyncICRClient``.

    Takes exactly the arguments of ``AsyncICRClient`` (a configuration mistake raises
    ``ConfigurationError`` here, before any thread starts) and has the same methods, returning
    plain values; ``iter_*`` methods return lazy iterators. Use it as
    ``with ICRClient(app_id, private_key) as client:`` or call ``close()``.

    Safe to share between threads: all blocking clients of the process run their requests on
    one background event loop, and tokens are minted once per installation however many
    threads ask. Works inside Jupyter or an ``async def`` (it does not need the caller's
    loop), and in a child after ``os.fork()`` (the child gets its own loop and connections).
    """

    __slots__ = ("_finalizer",)

    _core: AsyncICRClient

    @_same_parameters(AsyncICRClient.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Build the async client now, in the caller's thread; it needs no loop until its
        first request, and its session is then created on the background loop."""
        core = AsyncICRClient(*args, **kwargs)
        self._core = core
        self._handle = handle = _Handle(core)
        # Dropped without close(): close the session anyway (never blocking the collector).
        self._finalizer = weakref.finalize(self, _finalize, handle)
        self._finalizer.atexit = False  # the module's atexit hook closes open clients in order

    # -- lifecycle ---------------------------------------------------------------------

    def _app_client(self) -> ICRClient:
        return self

    def __enter__(self: _Client) -> _Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool; the last blocking client closed stops the background
        loop. Idempotent; later calls raise ``ClientClosedError``."""
        self._handle.close()
        self._finalizer.detach()

    @property
    def closed(self) -> bool:
        """Whether the client has been closed."""
        return self._handle.closed

    @property
    def app_id(self) -> str:
        """The app's id."""
        return self._core.app_id

    @property
    def config(self) -> ClientConfig:
        """The frozen settings this client was built with."""
        return self._core.config

    @property
    def stats(self) -> ClientStats:
        """Counters about tokens and requests (shared with the async core)."""
        return self._core.stats

    key_fingerprint = _Forward(AsyncICRClient.key_fingerprint)
    signers = _Forward(AsyncICRClient.signers)
    base_url = _Forward(AsyncICRClient.base_url)
    jwt_signatures = _Forward(AsyncICRClient.jwt_signatures)
    clock_offset = _Forward(AsyncICRClient.clock_offset)

    def __repr__(self) -> str:
        return f"<ICRClient app_id={self.app_id!r} base_url={self.base_url!r}>"

    # -- app endpoints: one typed twin per async method ----------------------------------

    create_app_token = _blocking(AsyncICRClient.create_app_token)
    create_installation_token = _blocking(AsyncICRClient.create_installation_token)
    revoke_token = _blocking(AsyncICRClient.revoke_token)
    list_installations = _blocking(AsyncICRClient.list_installations)
    iter_installations = _iterating(AsyncICRClient.iter_installations)
    get_installation = _blocking(AsyncICRClient.get_installation)
    create_user_organization = _blocking(AsyncICRClient.create_user_organization)
    request = _blocking(AsyncICRClient.request)

    # -- derived clients ---------------------------------------------------------------

    installation = _derived(AsyncICRClient.installation, InstallationClient)
    app_token_client = _derived(AsyncICRClient.app_token_client, AppTokenClient)


__getattr__ = deprecated_names(
    "icr_async.sync",
    globals(),
    {"SyncInstallationClient": "InstallationClient", "SyncAppTokenClient": "AppTokenClient"},
)
