"""What every Redis-backed store of ``icr_async.contrib.redis`` shares: the connection, the
key material, the namespace, the per-call timeout and the circuit breaker.

A store is built either from a Redis client or URL plus exactly one of ``encryption_key`` /
``derive_from``, or from another store (``RedisIdempotencyStore(token_cache)``): then it uses
the same connection, namespace and key material, and **the same breaker**, so one outage is
noticed once and every store of the process steps aside together.

Redis down, slow or flushed never fails a request on its own: every call is bounded by
``op_timeout``; a failure raises ``SharedCacheUnavailableError`` (each store says what it
falls back to), and the breaker then skips Redis for ``retry_after`` seconds before one call
probes it again. Warnings are rate-limited to one per ``log_interval`` for the connection
(every store built on it shares the limit), and the client adds no warning of its own about
the same failure: one outage is one stream of warnings, which says why.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "icr_async.contrib.redis needs redis-py: pip install 'icr-async[redis]'"
    ) from exc

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._keys import KeySource, PrivateKey, load_private_key
from ..errors import ConfigurationError, ICRError

__all__ = [
    "REDIS_FAILURES",
    "Counters",
    "RedisStore",
    "SharedCacheUnavailableError",
    "aioredis",
    "hkdf",
    "positive",
]

logger = logging.getLogger("icr_async")

_HKDF_SALT = b"icr-async redis token cache"
_NAMESPACE = re.compile(r"[A-Za-z0-9:._-]{1,64}")
REDIS_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class SharedCacheUnavailableError(ICRError):
    """Redis could not be used for this call (down, slow, or a wait on it ran out).

    The token cache never lets it reach a request (it mints locally instead) and neither
    does the back-off store (it keeps pauses per process). The idempotency store raises it
    from a keyed credit action *before anything is sent*: without the shared record the
    action could be sent twice, so it is refused; try again when Redis is back.
    """


def hkdf(material: bytes, info: bytes) -> bytes:
    """A 32-byte key for one purpose (``info``) from the store's key material."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=info).derive(material)


def _private_der(key: PrivateKey) -> bytes:
    raw = key.jwk.private_key
    if raw is None:  # pragma: no cover - PrivateKey always wraps a private key
        raise ConfigurationError("derive_from needs a private key")
    return raw.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def positive(name: str, value: float) -> float:
    """``value`` as a float if it is a positive, finite number; ``ConfigurationError`` else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    if math.isinf(value):
        raise ConfigurationError(f"{name} must be finite")
    return float(value)


class _Link:
    """One Redis client and its breaker, shared by every store built from the first."""

    def __init__(
        self, client: aioredis.Redis, *, op_timeout: float, retry_after: float, log_interval: float
    ) -> None:
        self.redis = client
        self.op_timeout = op_timeout
        self.retry_after = retry_after
        self.log_interval = log_interval
        self.down_until = 0.0
        self.down_since = 0.0
        self.probing = False
        self.last_warning = -math.inf
        self.suppressed = 0


class RedisStore:
    """The base of the Redis stores: connection, key material, namespace and breaker.

    ``redis``: a ``redis.asyncio.Redis`` (``decode_responses=False``, the default), a URL
    such as ``"redis://127.0.0.1:6379/0"`` (the client it builds is closed by
    :meth:`aclose`), or another store of this module, whose connection, namespace, key
    material and circuit breaker are then shared (pass nothing else then).
    """

    _what = "Redis"
    _fallback = "working without it"
    stats: Counters
    namespace: str
    _link: _Link
    _material: bytes
    _owns_client: bool

    def __init__(
        self,
        redis: aioredis.Redis | str | RedisStore,
        *,
        encryption_key: bytes | None = None,
        derive_from: KeySource | None = None,
        namespace: str | None = None,
        op_timeout: float | None = None,
        retry_after: float | None = None,
        log_interval: float | None = None,
    ) -> None:
        if isinstance(redis, RedisStore):
            given = [
                name
                for name, value in (
                    ("encryption_key", encryption_key),
                    ("derive_from", derive_from),
                    ("namespace", namespace),
                    ("op_timeout", op_timeout),
                    ("retry_after", retry_after),
                    ("log_interval", log_interval),
                )
                if value is not None
            ]
            if given:
                raise ConfigurationError(
                    f"a store built from another shares its settings: drop {', '.join(given)}"
                )
            self._link = redis._link
            self._material = redis._material
            self.namespace = redis.namespace
            self._owns_client = False
            return
        self._material = self._key_material(encryption_key, derive_from)
        namespace = "icr" if namespace is None else namespace
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ConfigurationError(
                "namespace must be 1-64 characters of letters, digits and ':._-'"
            )
        self.namespace = namespace
        timeout = positive("op_timeout", 0.5 if op_timeout is None else op_timeout)
        pause = positive("retry_after", 5.0 if retry_after is None else retry_after)
        interval = 60.0 if log_interval is None else float(log_interval)
        if isinstance(redis, str):
            # The socket timeouts are only a backstop: op_timeout is enforced per call by
            # _bounded, which does not mistake a stalled loop for a slow Redis.
            backstop = max(5.0, 10 * timeout)
            client = aioredis.Redis.from_url(
                redis,
                socket_timeout=backstop,
                socket_connect_timeout=backstop,
                # One immediate retry reconnects a pooled connection Redis dropped (a
                # restart); longer backoffs are the circuit breaker's job.
                retry=Retry(NoBackoff(), 1),
            )
            self._owns_client = True
        elif isinstance(redis, aioredis.Redis):
            if redis.connection_pool.connection_kwargs.get("decode_responses"):
                raise ConfigurationError(
                    "the Redis client must have decode_responses=False: entries are binary"
                )
            client = redis
            self._owns_client = False
        else:
            raise ConfigurationError("redis must be a redis.asyncio.Redis client or a URL")
        self._link = _Link(client, op_timeout=timeout, retry_after=pause, log_interval=interval)

    @staticmethod
    def _key_material(encryption_key: bytes | None, derive_from: KeySource | None) -> bytes:
        if (encryption_key is None) == (derive_from is None):
            raise ConfigurationError(
                "a Redis store needs exactly one of encryption_key= (32 bytes) or "
                "derive_from= (the app's private key): nothing sensitive is stored in clear text"
            )
        if encryption_key is not None:
            if not isinstance(encryption_key, (bytes, bytearray)) or len(encryption_key) != 32:
                raise ConfigurationError(
                    "encryption_key must be 32 random bytes (e.g. secrets.token_bytes(32))"
                )
            return bytes(encryption_key)
        assert derive_from is not None
        key = (
            derive_from
            if isinstance(derive_from, PrivateKey)
            else load_private_key(derive_from, env=False)
        )
        return hkdf(_private_der(key), b"icr-async/v1/private-key")

    # ------------------------------------------------------------------ shared settings

    @property
    def _redis(self) -> aioredis.Redis:
        return self._link.redis

    @property
    def op_timeout(self) -> float:
        """The most one Redis call may take."""
        return self._link.op_timeout

    @property
    def retry_after(self) -> float:
        """How long Redis is left alone after a failure before one call probes it."""
        return self._link.retry_after

    @property
    def log_interval(self) -> float:
        """At most one warning about Redis per this many seconds."""
        return self._link.log_interval

    @property
    def available(self) -> bool:
        """False while the circuit breaker keeps Redis out of the way after a failure."""
        return self._link.down_until == 0.0

    async def ping(self) -> bool:
        """Whether Redis answers now (also closes the breaker when it does)."""
        try:
            return bool(await self._op(self._redis.ping))
        except SharedCacheUnavailableError:
            return False

    async def aclose(self) -> None:
        """Close the Redis client if this store built it from a URL (idempotent)."""
        if self._owns_client:
            await self._redis.aclose()

    # ------------------------------------------------- failure handling and breaker

    async def _op(self, call: Callable[[], Any]) -> Any:
        """One Redis round trip, bounded by ``op_timeout`` and guarded by the breaker."""
        stats = self.stats
        probe = self._enter(stats)
        stats.commands += 1
        link = self._link
        try:
            result = await self._bounded(call)
        except REDIS_FAILURES as exc:
            self._trip(exc, stats)
            raise SharedCacheUnavailableError(
                f"{self._what} unavailable ({type(exc).__name__})"
            ) from exc
        finally:
            if probe:
                link.probing = False
        if link.down_until:
            self._recover(stats)
        return result

    async def _bounded(self, call: Callable[[], Any]) -> Any:
        """Await ``call()`` for at most ``op_timeout`` of *this loop's* responsive time.

        A plain ``wait_for`` also counts time this process spent unable to run: with more
        busy workers than cores a loop can stall for most of a second, and the reply, long
        arrived, loses the race to the timer. Measured: 8 workers on 2 cores took that for
        an outage and minted 2-5 tokens per installation. So the budget is spent in four
        steps and a step that overran (the loop was stalled) is charged only 1.5 steps.
        """
        task = asyncio.ensure_future(call())
        op_timeout = self._link.op_timeout
        step = op_timeout / 4
        charged = 0.0
        loop = asyncio.get_running_loop()
        try:
            while True:  # bounded: every pass charges at least one step of the budget
                started = loop.time()
                await asyncio.wait((task,), timeout=step)
                if task.done():
                    return task.result()
                charged += min(max(loop.time() - started, step), 1.5 * step)
                if charged >= op_timeout - 1e-9:
                    raise asyncio.TimeoutError
        finally:
            if not task.done():
                task.cancel()

    def _enter(self, stats: Counters) -> bool:
        """Refuse at once while the breaker is open; let exactly one call probe after."""
        link = self._link
        if not link.down_until:
            return False
        if time.monotonic() < link.down_until or link.probing:
            stats.short_circuits += 1
            raise SharedCacheUnavailableError(
                f"{self._what} unavailable (recent failure); {self._fallback}"
            )
        link.probing = True
        return True

    def _trip(self, exc: BaseException, stats: Counters) -> None:
        stats.errors += 1
        link = self._link
        now = time.monotonic()
        if not link.down_until:
            stats.breaker_trips += 1
            link.down_since = now
        link.down_until = now + link.retry_after
        # The type only: a Redis error's text can carry host names or configuration.
        self._warn(
            "%s unavailable (%s); %s, next try in %.1f s",
            self._what,
            type(exc).__name__,
            self._fallback,
            link.retry_after,
        )

    def _recover(self, stats: Counters) -> None:
        stats.recoveries += 1
        link = self._link
        logger.info(
            "%s is back after %.1f s; sharing again",
            self._what,
            time.monotonic() - link.down_since,
        )
        link.down_until = 0.0
        link.down_since = 0.0

    def _warn(self, message: str, *args: object) -> None:
        """A warning at most once per ``log_interval``; the others go to debug."""
        link = self._link
        now = time.monotonic()
        if now - link.last_warning >= link.log_interval:
            suppressed, link.suppressed = link.suppressed, 0
            link.last_warning = now
            if suppressed:
                message += " (%d similar messages suppressed)"
                args = (*args, suppressed)
            logger.warning(message, *args)
        else:
            link.suppressed += 1
            logger.debug(message, *args)


class Counters:
    """Base of the Redis stores' statistics: integer counters named in ``__slots__``, with
    one snapshot and one ``repr`` for all of them (no secrets are ever counted here).

    The counters of the connection and its circuit breaker are here; each store adds its
    own. Counts are per store: a breaker shared by several stores counts a trip, a short
    circuit or a recovery on the store whose call met it.
    """

    __slots__: tuple[str, ...] = (
        "breaker_trips",
        "commands",
        "errors",
        "recoveries",
        "short_circuits",
    )

    def __init__(self) -> None:
        self.commands: int = 0
        """Round trips sent to Redis (scripts included)."""
        self.errors: int = 0
        """Redis calls that failed (refused, reset, timed out)."""
        self.breaker_trips: int = 0
        """Outages noticed: calls that opened the circuit breaker."""
        self.short_circuits: int = 0
        """Calls answered "unavailable" at once while the breaker was open."""
        self.recoveries: int = 0
        """Outages that ended: calls that found Redis back and closed the breaker."""

    def as_dict(self) -> dict[str, int]:
        """A plain snapshot, e.g. for metrics (counters in alphabetical order)."""
        names = {name for cls in type(self).__mro__ for name in getattr(cls, "__slots__", ())}
        return {name: getattr(self, name) for name in sorted(names)}

    def __repr__(self) -> str:
        fields = " ".join(f"{k}={v}" for k, v in self.as_dict().items())
        return f"<{type(self).__name__} {fields}>"
