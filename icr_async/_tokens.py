"""Installation and app tokens: a bounded cache with single-flight refresh.

The promise: however many callers ask for one installation's token at the same moment,
exactly one mint goes to the server; different installations mint in parallel; a token is
refreshed ``refresh_margin`` seconds before it expires (half its life for a token that
lives less than twice the margin), never served stale; a caller that is
cancelled while waiting neither cancels nor poisons the mint for the others; a failed mint
reaches every waiter and is not cached; and if a refresh fails while the cached token is
still valid, that token is served (a *soft refresh*) with a warning.

Two layers: an in-process LRU (``MemoryTokenCache``; every request looks here first, with no
``await``) and, optionally, a shared ``TokenCache`` (e.g. Redis) consulted only on a local
miss, whose ``lease`` extends single flight across processes.

Single flight lives in one place per layer: within a process it is the manager's table of
flights (one task per key, which every caller awaits); across processes it is the shared
cache's ``lease``. The memory cache needs no lock of its own, so its ``lease`` is a no-op.

An outage of the shared cache is the cache's to report: it knows the cause, and one cache
may serve many clients. The manager only falls back to a local mint and counts the failure
(``ClientStats.shared_cache_errors``), logging it at DEBUG, unless the cache failed
in a way it did not report itself (see ``TokenCache``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

from . import _fork
from ._clock import Clock
from .errors import APIError, ICRError, SignerError, TokenError, TransportError
from .models import Token

__all__ = ["ClientStats", "MemoryTokenCache", "TokenCache", "TokenManager"]

logger = logging.getLogger("icr_async")

# A token with less life than this is never handed out, even by a soft refresh: the request
# it goes on would most likely reach the server after it expired.
STALE_FLOOR = 15.0


@runtime_checkable
class TokenCache(Protocol):
    """Where tokens are kept and shared. Implement it to share tokens across processes.

    Keys already include everything that changes a token (app id, base URL, key
    fingerprint, installation id). ``ttl`` is how long the entry may be served (the token's
    life minus the refresh margin). ``lease`` is a cross-holder lock for single flight: only
    the holder mints; it must expire on its own if the holder dies. Within one process the
    client already lets a single caller mint per key, so ``lease`` only has to exclude
    *other* processes (an in-process cache may make it a no-op).

    Failures: any exception makes the client mint locally (a token already minted is kept)
    and count it in ``ClientStats.shared_cache_errors``. Reporting an outage is the cache's
    job: raise an ``ICRError`` subclass once you have logged the cause (rate-limited, as
    ``RedisTokenCache`` does with ``SharedCacheUnavailableError``), and the client logs it at
    DEBUG only. Any other exception is taken for a failure nobody reported: the client logs
    the first one at WARNING and the rest at DEBUG.
    """

    async def get(self, key: str) -> Token | None:
        """The cached token for ``key``, or ``None``."""
        ...

    async def set(self, key: str, token: Token, *, ttl: float) -> None:
        """Store ``token`` under ``key`` for ``ttl`` seconds."""
        ...

    async def delete(self, key: str, *, token: str | None = None) -> None:
        """Remove ``key`` (only if it still holds ``token``, when given)."""
        ...

    def lease(self, key: str, *, ttl: float) -> AbstractAsyncContextManager[None]:
        """Hold the right to mint for ``key`` for at most ``ttl`` seconds.

        An implementation may also return *without* the lease once another holder has
        stored a new token for ``key`` meanwhile: the caller re-checks the cache inside the
        block and mints only if it finds nothing fresh.
        """
        ...


class MemoryTokenCache:
    """The default cache: an in-process LRU with a size cap and expiry sweeps.

    Implements ``TokenCache`` and adds synchronous ``peek``/``put`` used on the hot path.
    """

    def __init__(self, *, max_entries: int = 10_000, clock: Clock | None = None) -> None:
        self.max_entries: int = max_entries
        """The most tokens kept; past it the least recently used go first."""
        self._clock: Clock = clock or time.time
        self._entries: OrderedDict[str, Token] = OrderedDict()
        self._puts = 0
        self.evictions: int = 0
        """Entries dropped for the size cap or found expired by a sweep."""

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: str) -> Token | None:
        """The entry for ``key`` (marking it recently used), or ``None``. Never awaits."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, token: Token) -> None:
        """Store ``token``, evicting the least recently used entries past the cap."""
        entries = self._entries
        entries[key] = token
        entries.move_to_end(key)
        self._puts += 1
        if self._puts % 1024 == 0:
            self.sweep()
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
            self.evictions += 1

    def discard(self, key: str, token: str | None = None) -> None:
        """Drop ``key`` (only if it holds ``token``, when given)."""
        entry = self._entries.get(key)
        if entry is not None and (token is None or entry.token == token):
            del self._entries[key]

    def discard_token(self, token: str) -> None:
        """Drop every entry holding ``token`` (a token revoked by value; rare, so a scan)."""
        for key in [k for k, t in self._entries.items() if t.token == token]:
            del self._entries[key]

    def sweep(self) -> int:
        """Evict expired entries; returns how many."""
        now = self._clock()
        dead = [k for k, t in self._entries.items() if t._expires <= now]
        for k in dead:
            del self._entries[k]
        self.evictions += len(dead)
        return len(dead)

    def clear(self) -> None:
        """Forget every token."""
        self._entries.clear()

    async def get(self, key: str) -> Token | None:
        """``TokenCache.get``."""
        return self.peek(key)

    async def set(self, key: str, token: Token, *, ttl: float) -> None:
        """``TokenCache.set`` (the entry's own ``expires_at`` bounds it; ``ttl`` is advisory)."""
        self.put(key, token)

    async def delete(self, key: str, *, token: str | None = None) -> None:
        """``TokenCache.delete``."""
        self.discard(key, token)

    @contextlib.asynccontextmanager
    async def lease(self, key: str, *, ttl: float) -> AsyncIterator[None]:
        """``TokenCache.lease``: granted at once. Nothing outside this process shares the
        memory, and inside it the client's own single flight lets one caller mint per key."""
        yield


class MintCounts(dict[str, int]):
    """Mints per installation id, for the ``max_entries`` installations minted for most
    recently (a long-lived service across ever new installations must not grow without
    bound); a missing id reads as 0, as in a ``Counter``."""

    __slots__ = ("max_entries",)

    def __init__(self, max_entries: int = 10_000) -> None:
        super().__init__()
        self.max_entries: int = max_entries
        """How many installations are remembered (the oldest is forgotten first)."""

    def __missing__(self, key: str) -> int:
        return 0

    def add(self, key: str) -> None:
        """Count one mint for ``key`` and make it the most recent."""
        count = self.pop(key, 0) + 1
        self[key] = count
        if len(self) > self.max_entries:
            del self[next(iter(self))]


class ClientStats:
    """Counters a client keeps about its tokens and requests (no secrets in here)."""

    __slots__ = (
        "cache_hits",
        "cache_misses",
        "clock_skew_corrections",
        "mints",
        "recoveries_401",
        "refreshes",
        "requests",
        "retries",
        "shared_cache_errors",
        "shared_cache_hits",
        "soft_refreshes",
        "total_mints",
        "waited",
    )

    def __init__(self, max_installations: int = 10_000) -> None:
        self.mints: MintCounts = MintCounts(max_installations)
        """Tokens minted, per installation id (``"@app"`` for the app token), for the
        ``max_installations`` most recently minted for (the client's ``token_cache_size``)."""
        self.total_mints: int = 0
        """Mints across every installation (and the app token), never forgotten."""
        self.cache_hits: int = 0
        """Tokens served from the in-process cache without waiting."""
        self.cache_misses: int = 0
        """Lookups that found no fresh token in memory (then shared cache, flight or mint)."""
        self.waited: int = 0
        """Callers that joined a mint another caller of this process had started."""
        self.refreshes: int = 0
        """Tokens fetched (minted, or found in the shared cache) to replace one still in memory."""
        self.recoveries_401: int = 0
        """401s on a cached token answered by minting a new one and retrying once."""
        self.soft_refreshes: int = 0
        """Failed refreshes answered with the cached token, still valid for a while."""
        self.clock_skew_corrections: int = 0
        """Times the clock offset was corrected from the server's ``Date`` after a 401."""
        self.retries: int = 0
        """Attempts repeated by the retry policy (not counting the first of each request)."""
        self.requests: int = 0
        """Requests sent to the server, counting every attempt of a retried one."""
        self.shared_cache_hits: int = 0
        """Tokens found in the shared cache (minted by another process or client)."""
        self.shared_cache_errors: int = 0
        """Failures of the shared cache that were worked around by minting locally."""

    def count_mint(self, key: str) -> None:
        """One token minted for ``key`` (an installation id, or ``"@app"``)."""
        self.mints.add(key)
        self.total_mints += 1

    def as_dict(self) -> dict[str, Any]:
        """A plain snapshot, e.g. for metrics."""
        out: dict[str, Any] = {name: getattr(self, name) for name in self.__slots__}
        out["mints"] = dict(self.mints)
        return out

    def __repr__(self) -> str:
        return (
            f"<ClientStats mints={self.total_mints} hits={self.cache_hits} misses={self.cache_misses} "
            f"waited={self.waited} refreshes={self.refreshes} recoveries_401={self.recoveries_401} "
            f"soft_refreshes={self.soft_refreshes} retries={self.retries}>"
        )


Minter = Callable[[str | None], Awaitable[Token]]


class TokenManager:
    """Hands out tokens per key, minting each at most once at a time."""

    def __init__(
        self,
        *,
        mint: Minter,
        clock: Clock,
        refresh_margin: float,
        memory: MemoryTokenCache,
        shared: TokenCache | None,
        stats: ClientStats,
        shared_prefix: str = "",
    ) -> None:
        self._mint = mint
        self.clock: Clock = clock
        self.refresh_margin = refresh_margin
        self.memory = memory
        self.shared = shared
        # Memory keys may be short (an installation id); the shared cache serves many apps
        # and servers, so its keys carry the client's prefix.
        self._shared_prefix = shared_prefix
        self.stats = stats
        self._flights: dict[str, asyncio.Task[Token]] = {}
        self._fork_generation = _fork.generation
        self._warned_unreported = False

    def margin_for(self, token: Token) -> float:
        """The refresh margin that applies to ``token``: ``refresh_margin``, but never more
        than half the token's own life.

        ICR documents 2-hour tokens, yet a server may issue shorter ones; with a fixed
        5-minute margin a 2-minute token would be "due" the moment it arrived and every
        request would mint (twice). Half its life keeps a short token useful while still
        refreshing it well before it expires.
        """
        life = token._expires - token._minted if token._minted else 0.0
        if life <= 0:
            return self.refresh_margin
        return min(self.refresh_margin, life / 2)

    def _need(self, token: Token, min_ttl: float | None) -> float:
        margin = self.margin_for(token)
        return margin if min_ttl is None else max(margin, min_ttl)

    def peek_fresh(self, key: str, min_ttl: float | None = None) -> Token | None:
        """The cached token if it has more life left than its refresh margin (and than
        ``min_ttl``), counted as a hit: the no-await path."""
        entry = self.memory.peek(key)
        if entry is None:
            return None
        # ``_expires`` is ``expires_at`` as POSIX seconds, worked out once per token: no
        # datetime arithmetic per request.
        left = entry._expires - self.clock()
        # The hot path: more left than the configured margin is enough for any token (the
        # adaptive margin is never larger), so the per-token margin is only worked out near
        # the end of a token's life.
        if (left > self.refresh_margin and (min_ttl is None or left > min_ttl)) or (
            left > self._need(entry, min_ttl)
        ):
            self.stats.cache_hits += 1
            return entry
        return None

    async def get(
        self, key: str, installation_id: str | None, *, min_ttl: float | None = None
    ) -> Token:
        """A token for ``key`` with more life left than its refresh margin and ``min_ttl``.

        A ``min_ttl`` that even a brand-new token cannot meet is a ``TokenError`` after at
        most one fresh mint, never a mint per call.
        """
        entry = self.peek_fresh(key, min_ttl)
        if entry is not None:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("token cache hit for %s", _who(installation_id))
            return entry
        self.stats.cache_misses += 1
        floor = STALE_FLOOR if min_ttl is None else max(STALE_FLOOR, min_ttl)
        force = False
        for _ in range(2):
            try:
                token = await self._join_flight(key, installation_id, force=force)
            except Exception:
                stale = self.memory.peek(key)
                if stale is not None and stale._expires - self.clock() > floor:
                    self.stats.soft_refreshes += 1
                    logger.warning(
                        "could not refresh the token for %s; serving the cached one, valid %.0f s more",
                        _who(installation_id),
                        stale._expires - self.clock(),
                    )
                    return stale
                raise
            remaining = token._expires - self.clock()
            if remaining > self._need(token, min_ttl):
                return token
            if min_ttl is None or remaining >= token._expires - token._minted - 1.0:
                # A token that was just minted here and still does not suit: another mint
                # would bring the same. Serve it if it is not stale, else fail below.
                break
            # A token from a shared cache (minted earlier elsewhere) may suit the margin but
            # not this caller's min_ttl: ask once more for a brand-new one.
            force = True
        remaining = token._expires - self.clock()
        if min_ttl is None and remaining > STALE_FLOOR:
            return token
        issued = (
            f" (the server issues {token._expires - token._minted:.0f}-second tokens)"
            if token._minted
            else ""
        )
        raise TokenError(
            f"a fresh token for {_who(installation_id)} lives {remaining:.0f} s{issued}, "
            f"less than the {self._need(token, min_ttl):.0f} s asked for"
        )

    async def _join_flight(self, key: str, installation_id: str | None, *, force: bool) -> Token:
        if self._fork_generation != _fork.generation:
            # Forked child: flights in progress at fork time belong to the parent's loop.
            self._flights = {}
            self._fork_generation = _fork.generation
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.get_running_loop().create_task(
                self._fly(key, installation_id, force=force)
            )
            self._flights[key] = flight
            flight.add_done_callback(lambda t, k=key: self._land(k, t))  # type: ignore[misc]
        else:
            self.stats.waited += 1
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("waiting on the mint already under way for %s", _who(installation_id))
        # shield: a waiter's cancellation must not cancel the mint the others wait for.
        return await asyncio.shield(flight)

    def _land(self, key: str, task: asyncio.Task[Token]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            # Mark the exception as retrieved: waiters may all have been cancelled.
            task.exception()

    async def _fly(self, key: str, installation_id: str | None, *, force: bool) -> Token:
        had = self.memory.peek(key) is not None
        shared = self.shared
        token: Token | None = None
        if shared is not None:
            token = await self._mint_shared(shared, key, installation_id, force=force)
        if token is None:
            token = await self._mint_counted(installation_id)
        self.memory.put(key, token)
        if had:
            self.stats.refreshes += 1
        return token

    async def _mint_counted(self, installation_id: str | None) -> Token:
        token = await self._mint(installation_id)
        self.stats.count_mint(installation_id or "@app")
        logger.debug("minted a token for %s", _who(installation_id))
        return token

    def _fresh(self, token: Token | None) -> bool:
        return token is not None and token._expires - self.clock() > self.margin_for(token)

    async def _mint_shared(
        self, shared: TokenCache, key: str, installation_id: str | None, *, force: bool
    ) -> Token | None:
        """Single flight through the shared cache; ``None`` means: mint locally.

        Any failure of the shared cache itself (down, slow, flushed) falls back to a local
        mint; a token already minted is never thrown away because storing it failed.
        """
        minted: Token | None = None
        key = self._shared_prefix + key
        try:
            if not force:
                cached = await shared.get(key)
                if self._fresh(cached):
                    self.stats.shared_cache_hits += 1
                    return cached
            async with shared.lease(key, ttl=30.0):
                if not force:
                    cached = await shared.get(key)
                    if self._fresh(cached):
                        self.stats.shared_cache_hits += 1
                        return cached
                minted = await self._mint_counted(installation_id)
                ttl = minted._expires - self.clock() - self.margin_for(minted)
                if ttl > 0:
                    await shared.set(key, minted, ttl=ttl)
                return minted
        except (asyncio.CancelledError, TokenError, SignerError):
            # A signer that failed is not the shared cache's fault: no "cache unavailable".
            raise
        except Exception as exc:
            if minted is not None:
                self._shared_failed(exc)
                return minted
            if isinstance(exc, (APIError, TransportError)):
                raise  # the mint itself failed: that is not the shared cache's fault
            self._shared_failed(exc)
            return None

    def _shared_failed(self, exc: BaseException) -> None:
        """Count a failure of the shared cache; the caller has fallen back already.

        An ``ICRError`` is the cache's own verdict, which it has reported itself (rate-
        limited, with the cause, once for every client it serves): a second warning here
        would make one outage two warning streams. Anything else went unreported, so the
        first one is a warning.
        """
        self.stats.shared_cache_errors += 1
        if isinstance(exc, ICRError) or self._warned_unreported:
            logger.debug("shared token cache unavailable (%s)", type(exc).__name__)
            return
        self._warned_unreported = True
        logger.warning(
            "shared token cache failed (%s); tokens are minted and kept locally "
            "(further failures are logged at DEBUG and counted in stats.shared_cache_errors)",
            type(exc).__name__,
        )

    async def invalidate(self, key: str, token: str | None = None) -> None:
        """Drop a token the server refused, locally and in the shared cache."""
        self.memory.discard(key, token)
        if self.shared is not None:
            try:
                await self.shared.delete(self._shared_prefix + key, token=token)
            except Exception as exc:
                self._shared_failed(exc)


def _who(installation_id: str | None) -> str:
    return f"installation {installation_id}" if installation_id else "the app"
