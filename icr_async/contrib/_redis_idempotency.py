"""``RedisIdempotencyStore``: idempotency keys of credit actions, shared by a fleet.

Each key is one Redis hash ``{namespace}:idem:v1:{app}:{key}`` (both parts keyed hashes:
neither the app nor your business key shows in Redis) holding the state (``pending``,
``done``, ``rejected``, ``unknown``), the claimant's random owner value, the action's name,
a keyed tag of its fingerprint (installation, path, body) and, once done, the server's
answer encrypted with AES-256-GCM (the record's name is associated data). Beside it a
lease key ``...:lease`` lives as long as the call may take.

* **claim** (one Lua script, one round trip): a new key becomes ``pending`` with its lease;
  a known one is answered with its record. A ``pending`` record whose lease is gone means
  its worker died mid-request: it turns ``unknown`` there and then, for good.
* **complete** / **release** (one script each): only the owner may write; a worker that
  outlived its lease still records what it learned, which beats ``unknown``.
* Records live ``ttl`` seconds (default a week), renewed when completed.

Redis down: a claim raises ``SharedCacheUnavailableError`` and **the action is not sent**
(a per-process fallback could send it twice). An outcome that cannot be written is kept in
this process and written with the next claim; if the process dies first, the lease runs out
and the next attempt reports the outcome as unknown, which is safe. A claim whose answer
was lost (Redis may have recorded it) and a release that failed leave a ``pending`` record
of an action this process knows it never sent: it keeps that owner value and claims the key
with it next time, which takes such a record back instead of calling it pending or unknown.

The records are the only memory of what was done: a Redis that loses them (restarted
without persistence, flushed, failed over to a lagging replica, evicting keys) lets a key
completed before the loss be sent again. Run it with ``appendonly yes`` and
``maxmemory-policy noeviction``. A completion that finds its record gone is counted
(``stats.lost``) and logged as a warning: the sign of such a loss.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import secrets
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._idempotency import DEFAULT_KEY_TTL, ActionClaim, ActionRecord, ActionState, Outcome
from .._keys import KeySource
from ._redis_base import (
    Counters,
    RedisStore,
    SharedCacheUnavailableError,
    aioredis,
    hkdf,
    positive,
)

__all__ = ["RedisIdempotencyStats", "RedisIdempotencyStore"]

_FORMAT_V1 = b"\x01"
_NONCE_LEN = 12
# Outcomes that could not be written, kept for the next claim; more than this is a long
# outage, and their leases will tell the truth ("unknown") anyway.
_MAX_UNWRITTEN = 10_000
_FLUSH_PER_CLAIM = 8
_STATES: dict[str, ActionState] = {
    "pending": "pending",
    "done": "done",
    "rejected": "rejected",
    "unknown": "unknown",
}

# KEYS: record, lease. ARGV: owner, action, fingerprint tag, lease ms, ttl ms.
# Returns {1} when claimed, else {0, state, action, tag, result, status, lapsed}. A record
# with this very owner is one this process claimed but never sent (see the docstring).
_CLAIM = """
local r = redis.call('HMGET', KEYS[1], 's', 'a', 'f', 'r', 'c', 'l', 'o')
local ours = r[7] == ARGV[1] and (r[1] == 'pending' or r[1] == 'unknown')
if not r[1] or ours then
  if ours then
    redis.call('DEL', KEYS[1])
  end
  redis.call('HSET', KEYS[1], 's', 'pending', 'o', ARGV[1], 'a', ARGV[2], 'f', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
  return {1}
end
local state = r[1]
local lapsed = r[6] or '0'
if state == 'pending' and redis.call('EXISTS', KEYS[2]) == 0 then
  state = 'unknown'
  lapsed = '1'
  redis.call('HSET', KEYS[1], 's', 'unknown', 'l', '1')
end
return {0, state, r[2] or '', r[3] or '', r[4] or '', r[5] or '', lapsed}
"""
# KEYS: record, lease. ARGV: owner, state, result blob, status, ttl ms.
# Returns 1 when written, 0 when another owner has the key, -1 when the record is gone.
_COMPLETE = """
local o = redis.call('HGET', KEYS[1], 'o')
if not o then
  return -1
end
if o ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 's', ARGV[2], 'r', ARGV[3], 'c', ARGV[4])
redis.call('HDEL', KEYS[1], 'l')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('DEL', KEYS[2])
return 1
"""
_RELEASE = """
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then
  return 0
end
return redis.call('DEL', KEYS[1], KEYS[2])
"""


class RedisIdempotencyStats(Counters):
    """Counters a ``RedisIdempotencyStore`` keeps (no secrets in here)."""

    __slots__ = ("claims", "completes", "lapsed", "lost", "refused", "releases", "unwritten")

    def __init__(self) -> None:
        super().__init__()
        self.claims: int = 0
        """Keys claimed: actions this process had the right to send."""
        self.refused: int = 0
        """Claims refused because the key was known (any state)."""
        self.lapsed: int = 0
        """Refusals of a pending record whose worker's lease had run out (outcome unknown)."""
        self.completes: int = 0
        """Outcomes recorded (done or rejected) for keys this process claimed."""
        self.releases: int = 0
        """Claims given back: the action certainly never left, so the key may be used again."""
        self.unwritten: int = 0
        """Outcomes that could not be written at once (Redis down) and were kept here."""
        self.lost: int = 0
        """Outcomes whose record was gone when they came: Redis lost data (or the key was
        forgotten while its action was in flight)."""


class RedisIdempotencyStore(RedisStore):
    """An ``IdempotencyStore`` in Redis: a credit action's key is known to every worker
    sharing the Redis, across restarts and deploys, for ``ttl`` seconds.

    Build it from a ``RedisTokenCache`` (``RedisIdempotencyStore(cache)``) to share its
    connection, namespace, key and circuit breaker, or like the cache from a client or URL
    with exactly one of ``encryption_key`` / ``derive_from`` (recorded answers are
    encrypted: they name organizations and beneficiaries). ``ttl``: how long a key is
    remembered (default a week; at least a minute). ``lease``: how long a pending record
    outlives a worker that died mid-request before the next attempt calls its outcome
    unknown; by default what the client asks, the call's deadline plus a minute. A worker
    slower than its lease is not resent either: its outcome is reported as unknown until it
    records the real one.

    With Redis unreachable a keyed action is refused before it is sent
    (``SharedCacheUnavailableError``); actions without a key are not affected.
    """

    _what = "Redis idempotency store"
    _fallback = "keyed credit actions are refused (not sent) until it answers"

    def __init__(
        self,
        redis: aioredis.Redis | str | RedisStore,
        *,
        ttl: float = DEFAULT_KEY_TTL,
        lease: float | None = None,
        encryption_key: bytes | None = None,
        derive_from: KeySource | None = None,
        namespace: str | None = None,
        op_timeout: float | None = None,
        retry_after: float | None = None,
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
        self.ttl: float = max(60.0, positive("ttl", ttl))
        """Seconds a key is remembered after its last write."""
        self.lease: float | None = None if lease is None else positive("lease", lease)
        """A fixed lease for every pending record, or ``None``: what the client asks."""
        self._aead = AESGCM(hkdf(self._material, b"icr-async/v1/idempotency-aead"))
        self._name_key = hkdf(self._material, b"icr-async/v1/idempotency-names")
        self._claim_script = self._redis.register_script(_CLAIM)
        self._complete_script = self._redis.register_script(_COMPLETE)
        self._release_script = self._redis.register_script(_RELEASE)
        self._unwritten: dict[tuple[str, str], tuple[ActionClaim, Outcome, Any, int | None]] = {}
        # Owner values of claims this process made but never sent (the claim's answer was
        # lost, or the release failed): the next claim of the key uses it again.
        self._unsent: dict[tuple[str, str], str] = {}
        self.stats: RedisIdempotencyStats = RedisIdempotencyStats()

    # ------------------------------------------------------------------ the protocol

    async def claim(
        self, scope: str, key: str, *, action: str, fingerprint: str, lease: float
    ) -> ActionClaim | ActionRecord:
        """``IdempotencyStore.claim``: one round trip (plus any outcome still unwritten)."""
        if self._unwritten:
            await self._flush((scope, key))
        name = self.redis_key(scope, key)
        if self.lease is not None:
            lease = self.lease
        # Taken out before awaiting: a concurrent claim of the key here gets a fresh owner.
        owner = self._unsent.pop((scope, key), None) or secrets.token_hex(16)
        tag = self._tag(fingerprint)
        try:
            reply = await self._op(
                functools.partial(
                    self._claim_script,
                    keys=[name, name + ":lease"],
                    args=[owner, action, tag, max(1, int(lease * 1000)), int(self.ttl * 1000)],
                )
            )
        except BaseException:
            # Redis may have recorded the claim; the action is certainly not sent.
            self._keep_unsent(scope, key, owner)
            raise
        if int(reply[0]) == 1:
            self.stats.claims += 1
            return ActionClaim(scope=scope, key=key, owner=owner)
        self.stats.refused += 1
        text, earlier, earlier_tag, blob, status, lapsed = (_text(v) for v in reply[1:7])
        if lapsed == "1":
            self.stats.lapsed += 1
        # A state this version cannot read is "unknown": never a reason to resend.
        state = _STATES.get(text, "unknown")
        same = earlier == action and hmac.compare_digest(earlier_tag, tag)
        return ActionRecord(
            state=state,
            action=earlier,
            same_action=same,
            result=self._open(name, reply[4]) if same and blob else None,
            status=int(status) if status.isdigit() else None,
            lapsed=lapsed == "1",
        )

    async def complete(
        self,
        claim: ActionClaim,
        outcome: Outcome,
        *,
        result: Any = None,
        status: int | None = None,
    ) -> None:
        """``IdempotencyStore.complete``: one round trip. If Redis fails the outcome is kept
        here and written with the next claim (and ``SharedCacheUnavailableError`` raised)."""
        name = self.redis_key(claim.scope, claim.key)
        blob = b"" if result is None else self._seal(name, result)
        try:
            written = await self._op(
                functools.partial(
                    self._complete_script,
                    keys=[name, name + ":lease"],
                    args=[
                        claim.owner,
                        outcome,
                        blob,
                        "" if status is None else str(status),
                        int(self.ttl * 1000),
                    ],
                )
            )
        except SharedCacheUnavailableError:
            if len(self._unwritten) < _MAX_UNWRITTEN:
                self._unwritten[(claim.scope, claim.key)] = (claim, outcome, result, status)
                self.stats.unwritten += 1
            raise
        self.stats.completes += 1
        if int(written) == -1:
            self.stats.lost += 1
            self._warn(
                "the record of a keyed credit action was gone when its outcome (%s) came: "
                "Redis lost data (restarted without persistence, flushed, failed over or "
                "evicting keys) or the key was forgotten while in flight; keys done before "
                "such a loss can be sent again. Run this Redis with appendonly persistence "
                "and maxmemory-policy noeviction",
                outcome,
            )

    async def release(self, claim: ActionClaim) -> None:
        """``IdempotencyStore.release``: drop the claim if it is still ours."""
        name = self.redis_key(claim.scope, claim.key)
        try:
            await self._op(
                functools.partial(
                    self._release_script, keys=[name, name + ":lease"], args=[claim.owner]
                )
            )
        except BaseException:
            # The record may stay pending; it is ours to claim again (nothing was sent).
            self._keep_unsent(claim.scope, claim.key, claim.owner)
            raise
        self.stats.releases += 1

    async def forget(self, scope: str, key: str) -> bool:
        """``IdempotencyStore.forget``: drop the key for the whole fleet."""
        self._unwritten.pop((scope, key), None)
        self._unsent.pop((scope, key), None)
        name = self.redis_key(scope, key)
        return bool(await self._op(functools.partial(self._redis.delete, name, name + ":lease")))

    # ------------------------------------------------------------------- extras

    def redis_key(self, scope: str, key: str) -> str:
        """The Redis key name of an idempotency key: keyed hashes of the app and the key."""
        app = hmac.new(self._name_key, scope.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
        digest = hmac.new(
            self._name_key, b"key\x00" + key.encode("utf-8"), hashlib.sha256
        ).hexdigest()[:32]
        return f"{self.namespace}:idem:v1:{app}:{digest}"

    def __repr__(self) -> str:
        state = "available" if self.available else "unavailable"
        return f"<RedisIdempotencyStore namespace={self.namespace!r} {state}>"

    # ----------------------------------------------------------------- internals

    async def _flush(self, first: tuple[str, str]) -> None:
        """Write kept outcomes: the one for ``first`` (about to be claimed), then a few."""
        names = [first] if first in self._unwritten else []
        names += [n for n in list(self._unwritten)[:_FLUSH_PER_CLAIM] if n != first]
        for name in names:
            entry = self._unwritten.pop(name, None)
            if entry is None:
                continue
            claim, outcome, result, status = entry
            # A failure keeps it again and ends the flush; the claim that follows then
            # meets the same outage and is refused, as it must be.
            try:
                await self.complete(claim, outcome, result=result, status=status)
            except SharedCacheUnavailableError:
                return

    def _keep_unsent(self, scope: str, key: str, owner: str) -> None:
        if len(self._unsent) < _MAX_UNWRITTEN:
            self._unsent[(scope, key)] = owner

    def _tag(self, fingerprint: str) -> str:
        return hmac.new(self._name_key, fingerprint.encode("utf-8"), hashlib.sha256).hexdigest()[
            :32
        ]

    def _seal(self, name: str, result: Any) -> bytes:
        payload = json.dumps(result, separators=(",", ":"), default=str).encode("utf-8")
        nonce = os.urandom(_NONCE_LEN)
        return _FORMAT_V1 + nonce + self._aead.encrypt(nonce, payload, name.encode("utf-8"))

    def _open(self, name: str, raw: Any) -> Any:
        blob = bytes(raw)
        if len(blob) <= 1 + _NONCE_LEN or blob[:1] != _FORMAT_V1:
            return None
        try:
            payload = self._aead.decrypt(
                blob[1 : 1 + _NONCE_LEN], blob[1 + _NONCE_LEN :], name.encode("utf-8")
            )
            return json.loads(payload)
        except (InvalidTag, ValueError):
            self._warn("a recorded action answer in Redis does not decrypt; ignoring it")
            return None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)
