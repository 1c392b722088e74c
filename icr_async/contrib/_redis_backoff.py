"""``RedisBackoffStore``: one 429 pauses the whole fleet; optionally, one request rate per app.

How a pause travels:

* A worker that gets a 429 (or a 503 with ``Retry-After``) runs one Lua script: it sets
  ``{namespace}:bo:v1:{app}:{scope}`` with ``PX`` = the wait the server asked for, unless a
  longer pause is already there, and publishes the pause on ``{namespace}:bo:v1:events``.
  The wait was measured on the server's clock (``Retry-After`` against its ``Date``) and
  Redis counts it down on its own, so no two machines' clocks are ever compared.
* Every worker keeps a listener task subscribed to that channel (started by its first
  request; it needs one connection of its own) and writes each pause into a local table.
  The check before each request reads only that table: nothing on the hot path touches
  Redis. A worker's first request reads the app's pause once (so a worker started during a
  pause waits too), and after a reconnect the listener re-reads the pauses it may have
  missed.
* A scope that has had a 429 is *limited* (``adaptive``, on by default): while it is, its
  requests take a slot from one Lua script at a fleet rate learned from the 429s
  (``_redis_adaptive``), so the next back-off periods see a 429 or none instead of one per
  request in flight. Scopes never limited keep the hot path that never asks Redis.
* With ``rate=(requests, per_seconds)`` every request instead runs one Lua script: the
  pause check and a GCRA (generic cell rate algorithm) slot for the app, on Redis's clock.
  The fleet then stays under the limit by itself; that costs one round trip per request.

Redis down: pauses stay per process (each worker still honours the 429s it sees itself),
no fleet rate (fixed or learned) is enforced, and the listener reconnects after
``retry_after``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import hashlib
import time
from typing import Any

from .. import _fork
from .._backoff import PauseScope, check_scope, remaining_pause
from .._clock import Clock
from ..errors import ConfigurationError
from . import _redis_adaptive as adaptive_lua
from ._redis_base import (
    REDIS_FAILURES,
    Counters,
    RedisStore,
    SharedCacheUnavailableError,
    aioredis,
)

__all__ = ["RedisBackoffStats", "RedisBackoffStore"]

_APP = "@app"
# A reserved slot may be taken this much before its time (the sleep that waited for it is
# rounded to whole ms) or this long after it (a loop that ran late); older ones are dropped.
_EARLY = 0.002
_LATE = 0.5
_BASE_STEP_MS = 1000
# KEYS: app pause, installation pause, GCRA state. ARGV: emission interval ms, tolerance ms.
# Returns {0, 0}: go (slot taken); {1, ms}: paused; {2, ms}: over the fleet rate, wait.
_ADMIT = """
local p = redis.call('PTTL', KEYS[1])
local q = redis.call('PTTL', KEYS[2])
if q > p then p = q end
if p > 0 then
  return {1, p}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[3]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then
  return {2, wait}
end
tat = tat + interval
redis.call('SET', KEYS[3], tat, 'PX', tat - now + 1000)
return {0, 0}
"""


class RedisBackoffStats(Counters):
    """Counters a ``RedisBackoffStore`` keeps (``commands`` leaves out the listener's reads)."""

    __slots__ = ("admitted", "heard", "limited", "pauses", "rate_waits", "reconnects")

    def __init__(self) -> None:
        super().__init__()
        self.pauses: int = 0
        """Pauses this process reported (429/503 with Retry-After it saw itself)."""
        self.heard: int = 0
        """Pauses learned from the channel (another worker's, or this one's echo)."""
        self.admitted: int = 0
        """Requests the fleet rate (fixed or learned) let through at once or at their slot."""
        self.rate_waits: int = 0
        """Times a request had to wait for the fleet rate or a pause Redis knew of."""
        self.limited: int = 0
        """Requests to a limited scope that asked Redis for a slot (``adaptive``)."""
        self.reconnects: int = 0
        """Times the listener (re)subscribed."""


def _rate(rate: tuple[float, float] | None, burst: int) -> tuple[float, float] | None:
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ConfigurationError(f"burst must be a positive integer, got {burst!r}")
    if rate is None:
        return None
    try:
        count, period = rate
    except (TypeError, ValueError):
        raise ConfigurationError("rate must be (requests, per_seconds), e.g. (10, 1.0)") from None
    for value in (count, period):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigurationError(f"rate must hold two positive numbers, got {rate!r}")
    # Milliseconds between two requests, and how far ahead a burst may run. With burst=1
    # no window of ``period`` seconds ever holds more than ``count`` (+1 at its edge), so a
    # rate just under the server's limit stays under it whatever the server's windows.
    interval = 1000.0 * float(period) / float(count)
    return interval, interval * (burst - 1)


def _adaptive(adaptive: object, rate: object, hold: object) -> tuple[bool, int]:
    if adaptive is None:
        adaptive = rate is None
    if not isinstance(adaptive, bool):
        raise ConfigurationError(f"adaptive must be True, False or None, got {adaptive!r}")
    if adaptive and rate is not None:
        raise ConfigurationError(
            "adaptive=True and rate= exclude each other: a fixed fleet rate is not learned"
        )
    if isinstance(hold, bool) or not isinstance(hold, (int, float)) or not 1.0 <= hold <= 86_400.0:
        raise ConfigurationError(
            f"adaptive_hold must be a number of seconds from 1 to 86400, got {hold!r}"
        )
    return adaptive, int(hold * 1000)


class RedisBackoffStore(RedisStore):
    """A ``BackoffStore`` in Redis: a 429 seen by one worker pauses that scope for every
    worker sharing the Redis, until the end of the server's ``Retry-After``.

    Build it from a ``RedisTokenCache`` (``RedisBackoffStore(cache)``) to share its
    connection and circuit breaker, or from a client or URL (nothing is encrypted here: a
    pause holds no secret, so no key is needed). ``scope``: what a 429 on an installation's
    request pauses, ``"app"`` (default) or ``"installation"``. ``rate``: an optional fleet-wide
    limit per app, ``(requests, per_seconds)``; off by default, and the only setting that
    puts a Redis round trip on every request. ``burst``: how many requests may go at once
    before the rate spaces them out (default 1: evenly spaced, the safe choice under a
    server's fixed windows).

    ``adaptive`` (default ``None``: on unless ``rate`` is set): a scope that got a 429 is
    *limited* for ``adaptive_hold`` seconds (60) after its last 429 or the last request its
    rate held back; meanwhile each of its requests takes a slot from Redis (one round trip)
    at a fleet rate learned from the 429s, so later back-off periods see one 429 or none.
    Other scopes never ask Redis. ``False``: pauses only, as before.

    ``clock``: a monotonic clock for the local table of pauses and slots; ``script_clock``:
    POSIX seconds passed to the scripts instead of Redis's own ``TIME`` (both for tests).

    Close it with :meth:`aclose`: it stops the listener task (and closes a client it built).
    """

    _what = "Redis back-off store"
    _fallback = "pauses stay per process"

    def __init__(
        self,
        redis: aioredis.Redis | str | RedisStore,
        *,
        scope: PauseScope = "app",
        rate: tuple[float, float] | None = None,
        burst: int = 1,
        namespace: str | None = None,
        op_timeout: float | None = None,
        retry_after: float | None = None,
        log_interval: float | None = None,
        clock: Clock | None = None,
        adaptive: bool | None = None,
        adaptive_hold: float = 60.0,
        script_clock: Clock | None = None,
    ) -> None:
        if isinstance(redis, RedisStore):
            super().__init__(
                redis,
                namespace=namespace,
                op_timeout=op_timeout,
                retry_after=retry_after,
                log_interval=log_interval,
            )
        else:
            # Pauses are not secret: a fixed key material satisfies the base class, and
            # nothing is ever encrypted with it.
            super().__init__(
                redis,
                encryption_key=bytes(32),
                namespace=namespace,
                op_timeout=op_timeout,
                retry_after=retry_after,
                log_interval=log_interval,
            )
        self.scope: PauseScope = check_scope(scope)
        self.rate: tuple[float, float] | None = (
            None if rate is None else (float(rate[0]), float(rate[1]))
        )
        """The fleet's request rate as ``(requests, per_seconds)``, or ``None``: no limit."""
        self._gcra = _rate(rate, burst)
        self.adaptive: bool
        """Whether limited scopes take their slots at a learned fleet rate."""
        self.adaptive, self._hold_ms = _adaptive(adaptive, rate, adaptive_hold)
        self._clock: Clock = clock or time.monotonic
        self._script_clock = script_clock
        self._until: dict[tuple[str, str], float] = {}
        # Limited scopes (adaptive): until when, on ``clock``, this process asks Redis for
        # their slots; and the slots it reserved, due times on ``clock``, soonest first.
        self._limited: dict[tuple[str, str], float] = {}
        self._slots: dict[tuple[str, str], list[float]] = {}
        self._apps: dict[str, str] = {}
        self._channel = f"{self.namespace}:bo:v1:events"
        self._pause_script = self._redis.register_script(adaptive_lua.PAUSE)
        self._admit_script = self._redis.register_script(_ADMIT)
        self._slot_script = self._redis.register_script(adaptive_lua.ADMIT)
        self._peek_script = self._redis.register_script(adaptive_lua.PEEK)
        self._listener: asyncio.Task[None] | None = None
        self._listener_generation = -1
        self._closed = False
        self.stats: RedisBackoffStats = RedisBackoffStats()

    # ------------------------------------------------------------------ the protocol

    @property
    def active(self) -> bool:
        """True while a pause or a limited scope is known here, the fleet rate is on, or the
        listener is not running yet in this process (the next check starts it)."""
        return (
            bool(self._until)
            or bool(self._limited)
            or self._gcra is not None
            or self._listener_generation != _fork.generation
        )

    async def wait_time(self, app: str, installation: str | None) -> float:
        """``BackoffStore.wait_time``: the local table, then Redis for a limited scope's
        slot (``adaptive``) or the fixed fleet rate."""
        if self._listener_generation != _fork.generation:
            self._start_listener()
        digest = self._apps.get(app)
        if digest is None:
            digest = await self._first_read(app)
        scope = self._scope_id(installation)
        wait = self._remaining(digest, scope)
        if wait > 0:
            return wait
        if self._gcra is None:
            if not self._limited:
                return 0.0
            return await self._slot(digest, _APP if scope is None or self.scope == "app" else scope)
        interval, tolerance = self._gcra
        keys = [
            self._key(digest, _APP),
            self._key(digest, scope or _APP),
            self._key(digest, "@rate"),
        ]
        try:
            kind, ms = await self._op(
                functools.partial(
                    self._admit_script, keys=keys, args=[int(interval), int(tolerance)]
                )
            )
        except SharedCacheUnavailableError:
            return 0.0  # no fleet rate without Redis: each worker as on its own
        kind, ms = int(kind), int(ms)
        if kind == 0:
            self.stats.admitted += 1
            return 0.0
        self.stats.rate_waits += 1
        if kind == 1:
            self._set(digest, _APP if scope is None else scope, ms)
        return max(ms, 1) / 1000

    async def pause(self, app: str, installation: str | None, seconds: float) -> None:
        """``BackoffStore.pause``: here at once, then for the fleet (one round trip)."""
        digest = self._digest(app)
        scope = self._scope_id(installation) if self.scope == "installation" else None
        target = _APP if scope is None else scope
        ms = max(1, int(seconds * 1000))
        self._set(digest, target, ms)
        self.stats.pauses += 1
        keys = [self._key(digest, target)]
        if self.adaptive:
            keys.append(self._key(digest, target + ":ad"))
            self._limit(digest, target, self._hold_ms)
        try:
            kept = await self._op(
                functools.partial(
                    self._pause_script,
                    keys=keys,
                    args=[
                        ms,
                        self._channel,
                        f"{digest}|{target}|",
                        self._script_now(),
                        self._hold_ms,
                        adaptive_lua.START_RATE,
                        _BASE_STEP_MS,
                        adaptive_lua.MAX_STEP_MS,
                    ],
                )
            )
        except SharedCacheUnavailableError:
            return  # this worker still waits; the others learn from their own 429s
        self._set(digest, target, int(kept))

    # ------------------------------------------------------------------- extras

    def paused(self, app: str, installation: str | None = None) -> float:
        """Seconds the pause over this scope still runs, as this process knows it."""
        return self._remaining(self._digest(app), self._scope_id(installation))

    async def learned_rate(self, app: str, installation: str | None = None) -> float | None:
        """The fleet rate (requests per second) Redis holds for this scope while it is
        limited, or ``None`` (not limited, ``adaptive`` off, or Redis unavailable).

        ``app`` and ``installation`` are what the client passes to :meth:`wait_time`."""
        digest = self._digest(app)
        scope = self._scope_id(installation)
        target = _APP if scope is None or self.scope == "app" else scope
        try:
            value = await self._op(
                functools.partial(self._redis.hget, self._key(digest, target + ":ad"), "r")
            )
        except SharedCacheUnavailableError:
            return None
        return None if value is None else float(value)

    async def aclose(self) -> None:
        """Stop the listener and close the client if this store built it (idempotent)."""
        self._closed = True
        listener, self._listener = self._listener, None
        if listener is not None and not listener.done():
            listener.cancel()
            await asyncio.wait([listener])
        await super().aclose()

    def __repr__(self) -> str:
        state = "available" if self.available else "unavailable"
        return f"<RedisBackoffStore namespace={self.namespace!r} scope={self.scope!r} {state}>"

    # ----------------------------------------------------------------- internals

    def _digest(self, app: str) -> str:
        digest = self._apps.get(app)
        if digest is None:
            digest = self._apps[app] = hashlib.sha256(app.encode("utf-8")).hexdigest()[:16]
        return digest

    @staticmethod
    def _scope_id(installation: str | None) -> str | None:
        if installation is None:
            return None
        # '#' never starts an app marker or a plain id: the hash cannot collide with either.
        return "#" + hashlib.sha256(installation.encode("utf-8")).hexdigest()[:24]

    def _key(self, digest: str, scope: str) -> str:
        return f"{self.namespace}:bo:v1:{digest}:{scope}"

    def _remaining(self, digest: str, scope: str | None) -> float:
        if not self._until:
            return 0.0
        return remaining_pause(self._until, self._clock(), digest, _APP, scope)

    def _set(self, digest: str, scope: str, ms: int) -> None:
        if ms <= 0:
            return
        end = self._clock() + ms / 1000
        if end > self._until.get((digest, scope), 0.0):
            self._until[(digest, scope)] = end
            if self._slots:
                # Slots reserved before the pause would all fall due as it ends (a burst);
                # Redis restarts the spacing at its end, so they are void.
                for name in [n for n in self._slots if n[0] == digest]:
                    if scope in (_APP, name[1]):
                        del self._slots[name]

    def _script_now(self) -> int:
        """Now for the scripts, ms: -1 (Redis's own ``TIME``) unless a clock is injected."""
        clock = self._script_clock
        return -1 if clock is None else int(clock() * 1000)

    def _limit(self, digest: str, scope: str, ms: int) -> None:
        """Ask Redis for this scope's slots for the next ``ms`` (adaptive only)."""
        if self.adaptive and ms > 0:
            self._limited[(digest, scope)] = self._clock() + ms / 1000

    async def _first_read(self, app: str) -> str:
        """A worker that starts during a pause (a restart, a deploy) must not send its first
        requests into it: read the app's pause (and whether it is limited) once."""
        digest = self._digest(app)
        with contextlib.suppress(SharedCacheUnavailableError):
            if self.adaptive:
                left, limited = await self._op(
                    functools.partial(
                        self._peek_script,
                        keys=[self._key(digest, _APP), self._key(digest, _APP + ":ad")],
                        args=[self._script_now()],
                    )
                )
                self._limit(digest, _APP, int(limited))
            else:
                left = await self._op(functools.partial(self._redis.pttl, self._key(digest, _APP)))
            self._set(digest, _APP, int(left))
        return digest

    async def _slot(self, digest: str, scope: str) -> float:
        """Seconds until this request's slot in a limited scope (0: send now)."""
        name = (digest, scope)
        until = self._limited.get(name)
        if until is None:
            return 0.0
        now = self._clock()
        if until <= now:
            # Nobody here heard of a 429 or a held-back request for ``hold``: the scope is
            # back on the path that never asks Redis (the next 429 limits it again).
            del self._limited[name]
            self._slots.pop(name, None)
            return 0.0
        slots = self._slots.get(name)
        if slots:
            # A slot reserved earlier by a request of this process (it slept until now).
            while slots and slots[0] < now - _LATE:
                slots.pop(0)
            if slots and slots[0] <= now + _EARLY:
                slots.pop(0)
                self.stats.admitted += 1
                return 0.0
        self.stats.limited += 1
        try:
            kind, ms, alive = await self._op(
                functools.partial(
                    self._slot_script,
                    keys=[
                        self._key(digest, _APP),
                        self._key(digest, scope),
                        self._key(digest, scope + ":ad"),
                    ],
                    args=[self._script_now(), self._hold_ms],
                )
            )
        except SharedCacheUnavailableError:
            return 0.0  # no fleet rate without Redis: each worker as on its own
        kind, ms = int(kind), int(ms)
        if kind == 3:
            self._limited.pop(name, None)
            self._slots.pop(name, None)
            return 0.0
        if kind == 1:
            self.stats.rate_waits += 1
            self._set(digest, scope, ms)
            return max(ms, 1) / 1000
        self._limit(digest, scope, int(alive))
        if ms <= 0:
            self.stats.admitted += 1
            return 0.0
        self.stats.rate_waits += 1
        bisect.insort(self._slots.setdefault(name, []), self._clock() + ms / 1000)
        return ms / 1000

    def _start_listener(self) -> None:
        if self._closed:
            self._listener_generation = _fork.generation  # closed: no listener, ever
            return
        self._listener_generation = _fork.generation
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(), name="icr-async backoff listener"
        )

    async def _listen(self) -> None:
        """Follow the channel for the life of the store; reconnect after failures."""
        while not self._closed:  # bounded by aclose(); every failure sleeps retry_after
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                self.stats.reconnects += 1
                await self._catch_up()
                while not self._closed:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self._heard(message.get("data"))
            except REDIS_FAILURES as exc:
                self._warn(
                    "%s listener lost Redis (%s); %s, reconnecting in %.1f s",
                    self._what,
                    type(exc).__name__,
                    self._fallback,
                    self.retry_after,
                )
                await asyncio.sleep(self.retry_after)
            finally:
                with contextlib.suppress(*REDIS_FAILURES):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py lacks the hint

    async def _catch_up(self) -> None:
        """Read the app-wide pauses of the apps seen so far (missed while disconnected)."""
        for digest in list(self._apps.values()):
            left = await self._redis.pttl(self._key(digest, _APP))
            self._set(digest, _APP, int(left))

    def _heard(self, data: Any) -> None:
        text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
        digest, _, rest = text.partition("|")
        scope, _, ms = rest.partition("|")
        if digest and scope and ms.isdigit():
            self.stats.heard += 1
            self._set(digest, scope, int(ms))
            self._limit(digest, scope, self._hold_ms)
