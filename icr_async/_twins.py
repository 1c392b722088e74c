"""Typed blocking twins of async methods: one line per method in ``icr_async.sync``.

This module's one job is to turn a method of an async client into the method of its blocking
class, with the same parameters as far as mypy and ``inspect.signature`` can tell:

- ``_blocking(AsyncICRClient.get_installation)``: a coroutine method becomes a method that
  builds the very same coroutine and runs it on the background loop (``_background``);
- ``_iterating(...)``: a method returning an async iterator becomes one returning a lazy plain
  iterator, one item pulled through the loop per ``next()``;
- ``_derived(...)``: a method deriving another async client (``installation(id)``) returns the
  derived client's blocking twin;
- ``_Forward``: a read-only property read from the async object;
- ``_same_parameters``: an ``__init__(*args, **kwargs)`` typed with another's parameters.

``ParamSpec`` carries the parameters through, so no twin needs a ``# type: ignore`` and mypy
sees ``ICRClient.get_installation`` as ``(installation_id: str | int) -> Installation``.
Each twin is declared ``Final`` (``get_installation: Final = _blocking(...)``): a class
constant, bound like a method by mypy and pyright alike, whose type ``pyright --verifytypes``
accepts as declared (a bare ``name = call(...)`` counts as inferred, so ambiguous).
"""

from __future__ import annotations

import contextlib
import inspect
from _thread import get_ident
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from . import _fork
from ._background import Handle

__all__ = ["_Bridge", "_Forward", "_blocking", "_derived", "_iterating", "_same_parameters"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
C = TypeVar("C")
D = TypeVar("D")
S = TypeVar("S")


class _Bridge:
    """Base of the blocking classes: the async object it forwards to and the shared handle."""

    __slots__ = ("__weakref__", "_core", "_handle")

    _core: Any
    _handle: Handle

    def _app_client(self) -> _Bridge:
        """The blocking app client this object belongs to (itself, for the app client)."""
        raise NotImplementedError


def _mapped_signature(method: Callable[..., Any], returns: object) -> inspect.Signature:
    return inspect.signature(method).replace(return_annotation=returns)


def _name_twin(twin: Callable[..., Any], method: Callable[..., Any], returns: object) -> None:
    twin.__name__ = method.__name__
    twin.__qualname__ = method.__qualname__
    # The twins are documented as members of icr_async.sync, where they are defined.
    twin.__module__ = "icr_async.sync"
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


def _close_iterator(handle: Handle, name: str, iterator: AsyncIterator[Any]) -> None:
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
    method: Callable[Concatenate[C, P], D], wrap: Callable[[Any, D], S]
) -> Callable[Concatenate[_Bridge, P], S]:
    """The blocking twin of a method that derives another async client (``installation()``):
    it derives the async one and returns its blocking twin, sharing this client's loop.

    ``wrap`` is the blocking class, called with the blocking app client and the derived async
    client; its first parameter is ``Any`` because the app client's class lives in
    ``icr_async.sync``, which this module must not import.
    """

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
