"""Shared back-off: one ``429`` (or ``503`` with ``Retry-After``) pauses its scope for every
request that shares the store.

A *scope* is the app (every request the app makes: JWT calls, mints, every installation)
or one installation of it. When the server answers 429, or 503 with ``Retry-After``, the
client tells its ``BackoffStore`` to pause the scope for the wait the server asked for
(measured on the server's own clock: ``Retry-After`` against its ``Date``). Before each
request the client asks whether the scope is paused, and if so waits for the pause to end
(within the call's deadline and ``RetryPolicy.max_retry_after``) or raises
``BackoffPausedError`` without sending.

The check is on every request, so it must cost nothing when nothing is paused: the client
reads :attr:`BackoffStore.active` (a plain attribute or a cheap property) and only awaits
:meth:`BackoffStore.wait_time` when it is true. :class:`MemoryBackoffStore` (the default)
shares pauses between the requests of one process;
``icr_async.contrib.redis.RedisBackoffStore`` shares them across a fleet and can also hold
the fleet to a request rate per app.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, runtime_checkable

from ._clock import Clock
from .errors import BackoffPausedError, ConfigurationError

__all__ = [
    "BackoffStore",
    "MemoryBackoffStore",
    "PauseScope",
    "check_scope",
    "hold",
    "remaining_pause",
]

PauseScope = Literal["app", "installation"]
"""What a 429 on an installation's request pauses: the whole app (default: ICR documents no
limits, and the cautious reading stops the whole fleet) or only that installation."""

# The most times one request re-checks before giving up; each check waits what the store
# said, so only a pause extended again and again, or a fleet rate far over-subscribed, ends
# here (the call's deadline usually comes first).
_MAX_CHECKS = 100


def check_scope(scope: object) -> PauseScope:
    """``scope`` if it is ``"app"`` or ``"installation"``; ``ConfigurationError`` otherwise."""
    if scope == "app":
        return "app"
    if scope == "installation":
        return "installation"
    raise ConfigurationError(f'scope must be "app" or "installation", got {scope!r}')


@runtime_checkable
class BackoffStore(Protocol):
    """Pauses shared by every request that uses the store (pass as
    ``AsyncICRClient(backoff=...)``).

    ``app`` names the app (its id and base URL); ``installation`` is an installation id, or
    ``None`` for the app's own requests.
    """

    @property
    def active(self) -> bool:
        """Whether :meth:`wait_time` may say anything but 0 (read before every request)."""
        ...

    async def wait_time(self, app: str, installation: str | None) -> float:
        """Seconds to wait before sending to this scope; 0 means send now (and, with a
        fleet rate, the request's slot is taken)."""
        ...

    async def pause(self, app: str, installation: str | None, seconds: float) -> None:
        """Pause the scope for ``seconds`` (the server's ``Retry-After``); a longer pause
        already in force is kept."""
        ...


def remaining_pause(
    until: dict[tuple[Any, Any], float], now: float, app: Any, app_scope: Any, scope: Any
) -> float:
    """Seconds left of the longest pause over ``(app, app_scope)`` and ``(app, scope)`` in
    ``until`` (pause ends by scope), forgetting pauses that have ended: the one rule shared
    by the in-process table and the Redis store's local copy."""
    wait = 0.0
    for name in ((app, app_scope), (app, scope)) if scope else ((app, app_scope),):
        end = until.get(name)
        if end is None:
            continue
        if end <= now:
            del until[name]
        else:
            wait = max(wait, end - now)
    return wait


class MemoryBackoffStore:
    """The default ``BackoffStore``: pauses shared by the requests of one process.

    ``clock`` measures the pauses (the client's own clock when the client makes this store,
    so a ``ManualClock`` moves them too); ``scope`` picks what a 429 on an installation's
    request pauses (see :data:`PauseScope`).
    """

    __slots__ = ("_clock", "_until", "scope")

    def __init__(self, *, clock: Clock | None = None, scope: PauseScope = "app") -> None:
        self._clock: Clock = clock or time.monotonic
        self.scope: PauseScope = check_scope(scope)
        self._until: dict[tuple[str, str | None], float] = {}

    @property
    def active(self) -> bool:
        """True while some scope is (or was, until the next check) paused."""
        return bool(self._until)

    def remaining(self, app: str, installation: str | None) -> float:
        """Seconds the pause over this scope still runs (0 if none); expired pauses go."""
        if not self._until:
            return 0.0
        return remaining_pause(self._until, self._clock(), app, None, installation)

    async def wait_time(self, app: str, installation: str | None) -> float:
        """``BackoffStore.wait_time``."""
        return self.remaining(app, installation)

    def pause_now(self, app: str, installation: str | None, seconds: float) -> float:
        """Pause without awaiting; returns the end of the pause in force, on ``clock``."""
        name = (app, installation if self.scope == "installation" else None)
        end = self._clock() + max(0.0, seconds)
        current = self._until.get(name, 0.0)
        if end > current:
            self._until[name] = end
            return end
        return current

    async def pause(self, app: str, installation: str | None, seconds: float) -> None:
        """``BackoffStore.pause``."""
        self.pause_now(app, installation, seconds)

    def __repr__(self) -> str:
        return f"<MemoryBackoffStore paused={len(self._until)} scope={self.scope!r}>"


async def hold(
    store: BackoffStore,
    app: str,
    installation: str | None,
    *,
    sleep: Callable[[float], Awaitable[None]],
    deadline: float | None,
    max_wait: float,
    method: str,
    path: str,
) -> float:
    """Wait while the scope is paused; return the seconds waited.

    Raises ``BackoffPausedError`` (nothing sent) when one wait is longer than ``max_wait``
    (``RetryPolicy.max_retry_after``), would pass the call's ``deadline`` (a
    ``time.monotonic()`` reading), or the scope stays closed through ``_MAX_CHECKS`` checks.
    """
    waited = 0.0
    wait = 0.0
    for _ in range(_MAX_CHECKS):
        wait = await store.wait_time(app, installation)
        if wait <= 0:
            return waited
        if wait > max_wait or (deadline is not None and time.monotonic() + wait > deadline):
            break
        await sleep(wait)
        waited += wait
    raise BackoffPausedError(
        status=429,
        method=method,
        path=path,
        server_message=(
            f"not sent: this scope is paused for {wait:.1f} s more by an earlier 429/503 "
            "(Retry-After), longer than this call may wait"
        ),
        error="Too Many Requests",
        retry_after=wait,
    )
