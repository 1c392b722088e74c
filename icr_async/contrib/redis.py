"""A fleet of workers on one Redis: shared tokens, idempotency keys and back-off.

Install with ``pip install 'icr-async[redis]'``. Three stores, built on one connection (the
second and third take the first, and share its connection, namespace, encryption key and
circuit breaker)::

    import redis.asyncio as redis
    from icr_async import AsyncICRClient, PrivateKey
    from icr_async.contrib.redis import (
        RedisBackoffStore, RedisIdempotencyStore, RedisTokenCache,
    )

    key = PrivateKey.from_path("app.pem")
    cache = RedisTokenCache(redis.Redis(host="127.0.0.1"), derive_from=key)
    async with AsyncICRClient(
        app_id, key,
        token_cache=cache,                          # one mint per installation per refresh
        idempotency_store=RedisIdempotencyStore(cache),  # no credit action sent twice
        backoff=RedisBackoffStore(cache),           # one 429 pauses the whole fleet
    ) as client:
        ...

``RedisIdempotencyStore`` and ``RedisBackoffStore`` are described in their own classes.
How the token cache fits together:

* The client always keeps its own in-process cache (``MemoryTokenCache``) in front of this
  one, so a warm worker serves tokens from memory and does not ask Redis on every request;
  Redis is consulted only on a local miss or when a token nears its refresh margin.
* Keys are ``{namespace}:tok:v1:{scope}:{installation}`` where ``scope`` is a SHA-256 of
  app id, base URL and key fingerprint: two apps, environments or keys never share an entry,
  and no key name carries anything but a hash and the installation id.
* An entry lives in Redis for the token's life minus the refresh margin (the ``ttl`` the
  token manager passes), so Redis drops a token exactly when workers stop serving it.
* Values are AES-256-GCM ciphertexts of a JSON object: ``token``, ``expires_at`` and
  ``minted_at`` (POSIX seconds, so every version of the SDK reads the entries of every
  other during a rolling deploy), ``installation_id``, ``organization_id``, and the rest of
  what ICR sent (``permissions``, ``id``, ``created_at``, ``updated_at``, ``is_active``,
  ``app_id``, ``extra``; keys an older version ignores and a newer one treats as optional),
  under a key the user supplies or one derived (HKDF-SHA256) from the app's private key. The Redis key name is associated data, so a ciphertext copied
  under another installation's name does not decrypt. A Redis dump leaks no token.
* Single flight across processes: the worker that misses takes a lease (``SET NX PX`` with a
  random owner value), renews it while it mints, and releases it only if it still owns it
  (a Lua compare-and-delete). A worker that dies loses the lease within ``lease_ttl``.
  Workers that find the lease taken poll with a bounded, jittered backoff and stop waiting as
  soon as a *new* entry appears, so they do not mint. Polling rather than pub/sub: a waiter
  needs no dedicated connection and cannot miss a wake-up across a reconnect.
* Redis down, slow or flushed never fails a request: every Redis call is bounded by
  ``op_timeout``; a failure raises ``SharedCacheUnavailableError``, which the token manager
  answers by minting locally. A circuit breaker (one per connection, shared by the stores
  built on it) then skips Redis for ``retry_after`` seconds (so requests do not each wait
  for a timeout), after which a single call probes it and sharing resumes. Warnings are
  rate-limited to one per ``log_interval`` for the connection; the client only counts the
  failures (``client.stats.shared_cache_errors``), so an outage is one warning stream.

Expiry is stored as an absolute POSIX time, so machines sharing one Redis need clocks that
agree to well within the refresh margin (NTP does).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import hashlib
import hmac
import json
import os
import random
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._converters import parse_datetime
from .._keys import KeySource
from .._token_answer import share_permissions
from ..models import _NO_EXTRA, Permissions, Token
from ._redis_backoff import RedisBackoffStats, RedisBackoffStore
from ._redis_base import (
    Counters,
    RedisStore,
    SharedCacheUnavailableError,
    aioredis,
    hkdf,
    positive,
)
from ._redis_idempotency import RedisIdempotencyStats, RedisIdempotencyStore

__all__ = [
    "RedisBackoffStats",
    "RedisBackoffStore",
    "RedisCacheStats",
    "RedisIdempotencyStats",
    "RedisIdempotencyStore",
    "RedisStore",
    "RedisTokenCache",
    "SharedCacheUnavailableError",
]

_FORMAT_V1 = b"\x01"
_TAG_LEN = 16
_NONCE_LEN = 12
_HEADER_LEN = 1 + _TAG_LEN + _NONCE_LEN
# Installation ids are UUIDs or integers; anything else is hashed so a key name stays tame.
_PLAIN_ID = re.compile(r"[A-Za-z0-9@._-]{1,100}")

# Take the lease unless a new entry appeared since the first look.
# KEYS: entry, lease. ARGV: owner, lease ms, entry as first seen, "1" on the first look.
# Returns {1, entry} when the lease is ours, {2, entry} when another owner holds it,
# {0, ""} when the entry changed since the first look (someone stored a new token).
_ACQUIRE = """
local v = redis.call('GET', KEYS[1]) or ''
if ARGV[4] == '0' and v ~= '' and v ~= ARGV[3] then
  return {0, ''}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, v}
end
return {2, v}
"""
# Only the owner may release or extend its lease: a holder that was too slow must not
# delete the lease a successor took over.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Drop an entry only if it still holds the refused token, told by the keyed tag that follows
# the format byte (the token itself is never readable by Redis).
_DELETE_IF = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 2, 17) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisCacheStats(Counters):
    """Counters a ``RedisTokenCache`` keeps (no secrets in here)."""

    __slots__ = (
        "deletes",
        "hits",
        "lease_contended",
        "lease_timeouts",
        "leases",
        "misses",
        "sets",
        "undecryptable",
        "woken",
    )

    def __init__(self) -> None:
        super().__init__()
        self.hits: int = 0
        """Lookups that found a token (it may still be too close to expiry to serve)."""
        self.misses: int = 0
        """Lookups that found nothing, or an entry that did not decrypt."""
        self.sets: int = 0
        """Tokens stored for the other workers."""
        self.deletes: int = 0
        """Entries dropped (a token the server refused)."""
        self.leases: int = 0
        """Leases taken: this process had the right to mint."""
        self.lease_contended: int = 0
        """Lease requests that found another owner and had to wait."""
        self.woken: int = 0
        """Waits that ended because another process stored a new token (no mint here)."""
        self.lease_timeouts: int = 0
        """Waits for another worker's lease that ran out (this worker then minted locally)."""
        self.undecryptable: int = 0
        """Entries that did not decrypt (another key, or tampered) and were ignored."""


class RedisTokenCache(RedisStore):
    """A ``TokenCache`` in Redis, shared by every process of a fleet, encrypted at rest.

    ``redis``: a ``redis.asyncio.Redis`` (with ``decode_responses=False``, the default), a
    URL such as ``"redis://127.0.0.1:6379/0"`` (a client built from a URL is closed by
    :meth:`aclose`), or another store of this module to share its connection, namespace,
    key and circuit breaker.

    Exactly one of ``encryption_key`` (32 random bytes, the same for every worker, e.g. from
    your secret store) or ``derive_from`` (the app's private key, as a ``PrivateKey`` or
    anything ``AsyncICRClient`` accepts as a key) encrypts the entries.

    ``lease_ttl``: how long a lease outlives a holder that died (renewed while it mints).
    ``op_timeout``: the most one Redis call may take before the worker mints locally.
    ``retry_after``: how long Redis is left alone after a failure before one call probes it.
    ``poll_min``/``poll_max``: the backoff bounds of a worker waiting for another's mint.
    ``log_interval``: at most one warning about Redis per this many seconds.
    """

    _what = "Redis token cache"
    _fallback = "minting tokens locally"

    def __init__(
        self,
        redis: aioredis.Redis | str | RedisStore,
        *,
        encryption_key: bytes | None = None,
        derive_from: KeySource | None = None,
        namespace: str | None = None,
        lease_ttl: float = 5.0,
        op_timeout: float | None = None,
        retry_after: float | None = None,
        poll_min: float = 0.01,
        poll_max: float = 0.2,
        log_interval: float | None = None,
    ) -> None:
        super().__init__(
            redis,
            encryption_key=encryption_key,
            derive_from=derive_from,
            namespace=namespace,
            op_timeout=op_timeout,
            retry_after=retry_after,
            log_interval=log_interval,
        )
        self.lease_ttl: float = positive("lease_ttl", lease_ttl)
        """How long a lease outlives a holder that died (renewed while it mints)."""
        self.poll_min: float = positive("poll_min", poll_min)
        """The first wait of a worker polling for another's mint."""
        self.poll_max: float = max(self.poll_min, positive("poll_max", poll_max))
        """The longest wait between two polls (the waits double up to it, with jitter)."""
        self._aead = AESGCM(hkdf(self._material, b"icr-async/v1/aes-256-gcm"))
        self._tag_key = hkdf(self._material, b"icr-async/v1/token-tag")
        self._acquire_script = self._redis.register_script(_ACQUIRE)
        self._release_script = self._redis.register_script(_RELEASE)
        self._renew_script = self._redis.register_script(_RENEW)
        self._delete_script = self._redis.register_script(_DELETE_IF)
        self.stats: RedisCacheStats = RedisCacheStats()

    # ------------------------------------------------------------------ the protocol

    async def get(self, key: str) -> Token | None:
        """``TokenCache.get``: the token stored for ``key``, or ``None``.

        An entry that does not decrypt (another encryption key, or tampered) counts as a
        miss, with a warning.
        """
        name = self.redis_key(key)
        raw = await self._op(functools.partial(self._redis.get, name))
        if raw is None:
            self.stats.misses += 1
            return None
        token = self._open(name, bytes(raw))
        if token is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return token

    async def set(self, key: str, token: Token, *, ttl: float) -> None:
        """``TokenCache.set``: store ``token`` for ``ttl`` seconds (nothing if ``ttl`` <= 0)."""
        ms = int(ttl * 1000)
        if ms <= 0:
            return
        name = self.redis_key(key)
        blob = self._seal(name, token)
        await self._op(functools.partial(self._redis.set, name, blob, px=ms))
        self.stats.sets += 1

    async def delete(self, key: str, *, token: str | None = None) -> None:
        """``TokenCache.delete``: drop the entry (only if it still holds ``token``, when given)."""
        name = self.redis_key(key)
        if token is None:
            await self._op(functools.partial(self._redis.delete, name))
        else:
            await self._op(
                functools.partial(self._delete_script, keys=[name], args=[self._tag(name, token)])
            )
        self.stats.deletes += 1

    def lease(self, key: str, *, ttl: float) -> AbstractAsyncContextManager[None]:
        """``TokenCache.lease``: the right to mint ``key`` across every process.

        Waits (bounded by ``ttl``) while another process holds the lease, and returns
        *without* the lease as soon as that process stores a new entry: the caller re-checks
        the cache and finds it. Raises ``SharedCacheUnavailableError`` if Redis fails or the
        wait runs out, so the caller mints locally. The lease itself lasts ``lease_ttl`` and
        is renewed while held, for at most ``ttl`` seconds in all.
        """
        return self._lease(key, ttl)

    # ------------------------------------------------------------------- extras

    def redis_key(self, key: str) -> str:
        """The Redis key name for a token-manager key (``app|base_url|fingerprint|install``).

        Everything but the installation id is hashed: no secret and no configuration shows
        in a key name, and each app, environment and key gets its own keyspace.
        """
        scope, _, installation = key.rpartition("|")
        digest = hashlib.sha256(scope.encode("utf-8")).hexdigest()[:16]
        if not _PLAIN_ID.fullmatch(installation):
            # '#' never appears in a plain id, so a hashed id cannot collide with one.
            installation = "#" + hashlib.sha256(installation.encode("utf-8")).hexdigest()[:32]
        return f"{self.namespace}:tok:v1:{digest}:{installation}"

    def __repr__(self) -> str:
        state = "available" if self.available else "unavailable"
        return f"<RedisTokenCache namespace={self.namespace!r} {state}>"

    # ------------------------------------------------------------ encryption at rest

    def _tag(self, name: str, token: str) -> bytes:
        message = name.encode("utf-8") + b"\x00" + token.encode("utf-8")
        return hmac.new(self._tag_key, message, hashlib.sha256).digest()[:_TAG_LEN]

    def _seal(self, name: str, token: Token) -> bytes:
        payload = json.dumps(_entry(token), separators=(",", ":")).encode("utf-8")
        tag = self._tag(name, token.token)
        nonce = os.urandom(_NONCE_LEN)
        # The key name and the tag are authenticated too: an entry moved under another
        # installation's name, or a tag edited to dodge a delete, fails to decrypt.
        sealed = self._aead.encrypt(nonce, payload, name.encode("utf-8") + tag)
        return _FORMAT_V1 + tag + nonce + sealed

    def _open(self, name: str, raw: bytes) -> Token | None:
        if len(raw) <= _HEADER_LEN or raw[:1] != _FORMAT_V1:
            self._undecryptable("an unknown format")
            return None
        tag = raw[1 : 1 + _TAG_LEN]
        nonce = raw[1 + _TAG_LEN : _HEADER_LEN]
        try:
            payload = self._aead.decrypt(nonce, raw[_HEADER_LEN:], name.encode("utf-8") + tag)
        except InvalidTag:
            self._undecryptable("another encryption key, or was tampered with")
            return None
        try:
            return _token(json.loads(payload))
        except (ValueError, KeyError, TypeError, AttributeError):
            self._undecryptable("a payload this version cannot read")
            return None

    def _undecryptable(self, why: str) -> None:
        self.stats.undecryptable += 1
        self._warn("an entry in the Redis token cache has %s; ignoring it", why)

    # ------------------------------------------------------------------- the lease

    @contextlib.asynccontextmanager
    async def _lease(self, key: str, ttl: float) -> AsyncIterator[None]:
        name = self.redis_key(key)
        lease_name = name + ":lease"
        owner = secrets.token_hex(16)
        budget = ttl if ttl > 0 else self.lease_ttl
        hold_ms = max(1, int(min(self.lease_ttl, budget) * 1000))
        if not await self._acquire(name, lease_name, owner, hold_ms, budget):
            yield  # another process stored a new token while we waited: no lease needed
            return
        renewer = asyncio.get_running_loop().create_task(
            self._renew(lease_name, owner, hold_ms, budget)
        )
        try:
            yield
        finally:
            renewer.cancel()
            # asyncio.wait, not await: it neither raises the renewer's cancellation nor
            # swallows a cancellation of this task.
            await asyncio.wait([renewer])
            # Best effort: if Redis is gone the lease simply expires on its own.
            with contextlib.suppress(SharedCacheUnavailableError):
                await self._op(
                    functools.partial(self._release_script, keys=[lease_name], args=[owner])
                )

    async def _acquire(
        self, name: str, lease_name: str, owner: str, hold_ms: int, budget: float
    ) -> bool:
        """True: the lease is ours. False: a new entry appeared while another held it."""
        deadline = time.monotonic() + budget
        delay = self.poll_min
        seen = b""
        first = True
        while True:  # bounded by the deadline below
            reply = await self._op(
                functools.partial(
                    self._acquire_script,
                    keys=[name, lease_name],
                    args=[owner, hold_ms, seen, "1" if first else "0"],
                )
            )
            code = int(reply[0])
            if code == 1:
                self.stats.leases += 1
                return True
            if code == 0:
                self.stats.woken += 1
                return False
            if first:
                self.stats.lease_contended += 1
                seen = bytes(reply[1])
                first = False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stats.lease_timeouts += 1
                # Not an outage (the breaker stays closed), but this cache is the one that
                # reports why the client mints around it.
                self._warn(
                    "another worker held the token lease for more than %.0f s; %s",
                    budget,
                    self._fallback,
                )
                raise SharedCacheUnavailableError(
                    f"another worker held the token lease for more than {budget:.0f} s"
                )
            # Jitter spreads the waiters of many processes so they do not poll in step.
            await asyncio.sleep(min(remaining, delay * random.uniform(0.5, 1.0)))
            delay = min(delay * 2, self.poll_max)

    async def _renew(self, lease_name: str, owner: str, hold_ms: int, budget: float) -> None:
        """Keep a held lease alive while the mint runs, for ``budget`` seconds at most."""
        interval = hold_ms / 3000
        stop = time.monotonic() + budget - hold_ms / 1000
        while time.monotonic() + interval <= stop:  # bounded: the budget is finite
            await asyncio.sleep(interval)
            try:
                kept = await self._op(
                    functools.partial(self._renew_script, keys=[lease_name], args=[owner, hold_ms])
                )
            except SharedCacheUnavailableError:
                return  # the lease lapses by itself; the mint goes on
            if not kept:
                return  # flushed or taken over: nothing of ours to extend


_UTC = datetime.timezone.utc


def _entry(token: Token) -> dict[str, Any]:
    """What is sealed for ``token``. The first five keys are the format every earlier
    version wrote and reads (times as POSIX seconds, ``minted_at`` 0 when unknown); the
    others are ignored by those versions."""
    return {
        "token": token.token,
        "expires_at": token._expires,
        "installation_id": token.installation_id,
        "organization_id": token.organization_id,
        "minted_at": token._minted,
        "permissions": token.permissions.to_dict(),
        "id": token.id,
        "created_at": None if token.created_at is None else token.created_at.isoformat(),
        "updated_at": None if token.updated_at is None else token.updated_at.isoformat(),
        "is_active": token.is_active,
        "app_id": token.app_id,
        "extra": dict(token.extra),
    }


def _token(data: dict[str, Any]) -> Token:
    """The ``Token`` of an entry written by this version or an earlier one (which stored
    only the first five keys of ``_entry``)."""
    minted = float(data.get("minted_at") or 0.0)
    created = None if data.get("created_at") is None else parse_datetime(data["created_at"])
    updated = None if data.get("updated_at") is None else parse_datetime(data["updated_at"])
    if updated is not None and updated == created:
        updated = created  # one object for the two (as a freshly minted token has)
    return Token(
        token=str(data["token"]),
        expires_at=datetime.datetime.fromtimestamp(float(data["expires_at"]), tz=_UTC),
        installation_id=data.get("installation_id"),
        organization_id=data.get("organization_id"),
        permissions=share_permissions(Permissions(data.get("permissions") or {})),
        minted_at=datetime.datetime.fromtimestamp(minted, tz=_UTC) if minted else None,
        id=data.get("id"),
        created_at=created,
        updated_at=updated,
        is_active=bool(data.get("is_active", True)),
        app_id=data.get("app_id"),
        extra=dict(data.get("extra") or {}) or _NO_EXTRA,
    )
