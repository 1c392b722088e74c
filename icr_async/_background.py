"""The background event loop: run coroutines made in other threads on one loop per process.

This module's one job is the thread hop of the blocking clients (``icr_async.sync``): it owns
the process's shared loop, hands a coroutine to it and blocks the calling thread until the
coroutine ends. It knows nothing about ICR; what it runs and closes is any async client with
an ``aclose()``.

The loop
    One event loop per process runs in a daemon thread owned by anyio
    (``start_blocking_portal``), started on the first call of any blocking client and stopped
    when the last client that used it is closed (lease-counted, like anyio's
    ``BlockingPortalProvider``). anyio owns the loop's lifecycle only: the per-call path hands
    the coroutine over with ``loop.call_soon_threadsafe`` and waits on a bare lock, which costs
    less than ``asyncio.run_coroutine_threadsafe`` (see ``benchmarks/bench_blocking.py``).

uvloop
    Where ``uvloop`` is installed (``pip install icr-async[speedups]``), the loop is a uvloop
    loop: most of a hop is waking the other thread, and uvloop does that faster (see
    ``benchmarks/bench_blocking_hop.py``). Set ``ICR_ASYNC_NO_UVLOOP=1`` to keep the standard
    asyncio loop anyway; the variable is read each time the loop starts (the first call of a
    blocking client, or the first after the last one was closed), so it can be set in code
    before that. The caller's own loop, if it has one, is never touched.

Where it works
    From any thread, including one that runs its own event loop (Jupyter, inside an
    ``async def``): the caller only blocks, it never needs a loop. From the loop's own thread (a
    hook, a custom ``sleep`` or ``clock``) a blocking call would wait for itself: it raises
    ``BlockingCallError`` instead.

Fork
    An after-fork hook (registered through ``_fork``, where platforms without ``fork`` are
    handled) gives the child fresh loop state, and every call compares the fork generation
    recorded when the client attached to the loop (an integer comparison: no ``os.getpid()``
    per call): the child's first call starts its own loop, and the core's transport makes a new
    session there (the parent's sockets are abandoned, never closed or read).

Failure and shutdown
    Errors are the coroutine's own exception objects, re-raised in the calling thread (the
    traceback shows the caller's frames and the coroutine's). Ctrl-C while waiting cancels the
    coroutine on the loop, waits briefly for it to unwind and raises ``KeyboardInterrupt``. At
    interpreter exit open clients are closed and the loop stopped, so nothing hangs and aiohttp
    has nothing to warn about; a client dropped without ``close()`` is closed when it is
    garbage-collected.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import importlib.util
import os
import threading
import weakref
from _thread import allocate_lock, get_ident
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio.from_thread

from . import _fork
from .errors import BlockingCallError, ClientClosedError

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from anyio.from_thread import BlockingPortal

__all__ = [
    "CANCEL_GRACE",
    "LIVENESS_POLL",
    "LOOP_THREAD_NAME",
    "NO_UVLOOP_ENV",
    "Handle",
    "finalize",
    "loop_factory",
]

R = TypeVar("R")

# How long Ctrl-C waits for the cancelled coroutine to unwind (close its connection) before
# raising KeyboardInterrupt anyway: long enough for aiohttp, short enough to feel immediate.
CANCEL_GRACE = 2.0
# How often a waiting caller checks that the loop is still alive.
LIVENESS_POLL = 1.0
LOOP_THREAD_NAME = "icr-async-loop"
NO_UVLOOP_ENV = "ICR_ASYNC_NO_UVLOOP"

# Asked once, at import: finding a module walks sys.path, and whether uvloop is installed does
# not change while the process runs. (uvloop does not exist for Windows or PyPy, where this is
# simply False.)
_UVLOOP_INSTALLED = importlib.util.find_spec("uvloop") is not None


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the next background loop: ``uvloop.new_event_loop`` where uvloop is installed
    and ``ICR_ASYNC_NO_UVLOOP`` is not set (to anything but ``0``), else ``None`` (asyncio's
    default loop)."""
    if not _UVLOOP_INSTALLED or os.environ.get(NO_UVLOOP_ENV, "0") not in ("", "0"):
        return None
    # Imported by name, not statically: mypy and the core install must not need uvloop.
    factory: Callable[[], asyncio.AbstractEventLoop] = importlib.import_module(
        "uvloop"
    ).new_event_loop
    return factory


class _AsyncClient(Protocol):
    """What the loop needs of the async client it runs for: a way to close it."""

    async def aclose(self) -> None: ...


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
                factory = loop_factory()
                # No name= here: anyio only accepts it from 4.9 on; the thread names itself.
                portal_cm = anyio.from_thread.start_blocking_portal(
                    "asyncio", None if factory is None else {"loop_factory": factory}
                )
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
_handles: weakref.WeakSet[Handle] = weakref.WeakSet()
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


class Handle:
    """What every blocking object derived from one blocking app client shares: the async
    client and its lease on the loop. The fast path compares the fork generation, then the
    thread."""

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

    def __init__(self, core: _AsyncClient) -> None:
        self.core = core
        self.lock = threading.Lock()
        self.closed = False
        # generation != _fork.generation means "not attached in this process": before the
        # first call, after close, and in a forked child. One comparison covers all three.
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

    def on_loop_thread(self) -> bool:
        """Whether the caller is this handle's loop thread (in this process)."""
        return self.generation == _fork.generation and get_ident() == self.thread_id

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
        on_loop_thread = self.on_loop_thread()
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


def _close_later(loop: asyncio.AbstractEventLoop, core: _AsyncClient, shared: _SharedLoop) -> None:
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


def finalize(handle: Handle) -> None:
    """Close a handle whose blocking client was garbage-collected without ``close()``, without
    blocking (a ``weakref.finalize`` callback: it may run in any thread, the loop's too)."""
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
