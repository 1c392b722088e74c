"""Idempotency keys for credit actions: the ``IdempotencyStore`` protocol and its in-memory
default.

An action sent with an ``idempotency_key`` goes through a store in three steps:

1. :meth:`IdempotencyStore.claim` records the key as *pending* **before** the request
   leaves, with a lease as long as the call may take. If the key is known already the store
   answers with an :class:`ActionRecord` instead, and the client raises without sending:
   ``DuplicateActionError`` (carrying the recorded answer when the earlier attempt was the
   same action and finished) or ``ActionOutcomeUnknownError`` (the earlier attempt may or
   may not have been done: reconcile, never resend).
2. The request is sent once.
3. :meth:`IdempotencyStore.complete` records the outcome: ``done`` with the server's
   answer, ``rejected`` with the status of a 4xx (the server did nothing), or ``unknown``
   (a timeout, a dropped connection, a 5xx: the server may have acted). If the request
   certainly never left (a token could not be had, the scope was paused) the claim is
   :meth:`~IdempotencyStore.release`\\ d and the key may be used again.

A pending record whose lease ran out means the worker holding it died mid-request: the store
turns it into ``unknown`` for whoever asks next. The in-memory store here protects one process;
``icr_async.contrib.redis.RedisIdempotencyStore`` protects a fleet and survives restarts.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from typing import Any, Final, Literal, Protocol, runtime_checkable

import attrs

from ._clock import Clock
from .errors import (
    ActionOutcomeUnknownError,
    APIError,
    BackoffPausedError,
    ConfigurationError,
    DuplicateActionError,
    ICRError,
    InvalidArgumentError,
    RedirectError,
    SignerError,
    TokenError,
)

__all__ = [
    "DEFAULT_KEY_TTL",
    "ActionClaim",
    "ActionRecord",
    "ActionRegistry",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "action_outcome",
    "duplicate_error",
    "settle",
]

ActionState = Literal["pending", "done", "rejected", "unknown"]
Outcome = Literal["done", "rejected", "unknown"]

DEFAULT_KEY_TTL: Final = 7 * 24 * 3600.0
"""How long a store remembers an idempotency key by default: a week, so a job retried after a
long outage or a weekend still finds its key."""

MAX_REMEMBERED_ACTIONS: Final = 100_000

logger = logging.getLogger("icr_async")


@attrs.frozen(kw_only=True)
class ActionClaim:
    """The right to send one keyed action, returned by :meth:`IdempotencyStore.claim`.

    ``owner`` is a random value only the claimant knows: a store completes or releases a
    record only for its owner, so a worker that outlived its lease cannot overwrite what a
    later attempt learned.
    """

    scope: str
    key: str
    owner: str = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class ActionRecord:
    """What a store knows of a key it refused to claim again.

    ``state`` is ``pending`` (in flight, lease alive), ``done``, ``rejected`` or ``unknown``;
    ``action`` the earlier action's name; ``same_action`` whether its fingerprint (installation,
    path, body) equals the new attempt's; ``result`` the server's decoded JSON answer for a
    ``done`` record (``None`` if unreadable or not kept); ``status`` the HTTP status of a
    ``rejected`` one; ``lapsed`` is true for an ``unknown`` that came from an expired lease.
    """

    state: ActionState
    action: str
    same_action: bool
    result: Any = attrs.field(default=None, repr=False)
    status: int | None = None
    lapsed: bool = False


@runtime_checkable
class IdempotencyStore(Protocol):
    """Where idempotency keys of credit actions are recorded (pass as
    ``AsyncICRClient(idempotency_store=...)``).

    ``scope`` names the app (its id and base URL): keys of different apps never meet. A
    store must make :meth:`claim` atomic: of two concurrent claims of one key, on any
    workers, exactly one wins.
    """

    async def claim(
        self, scope: str, key: str, *, action: str, fingerprint: str, lease: float
    ) -> ActionClaim | ActionRecord:
        """Record ``key`` as pending for ``lease`` seconds and return the claim, or return
        the :class:`ActionRecord` of the earlier attempt (a lapsed lease makes it
        ``unknown``)."""
        ...

    async def complete(
        self,
        claim: ActionClaim,
        outcome: Outcome,
        *,
        result: Any = None,
        status: int | None = None,
    ) -> None:
        """Record how the claimed attempt ended (only if ``claim`` still owns the key)."""
        ...

    async def release(self, claim: ActionClaim) -> None:
        """Drop a claim whose request never left, so the key may be used again."""
        ...

    async def forget(self, scope: str, key: str) -> bool:
        """Drop ``key`` whatever its state; ``True`` if it was recorded."""
        ...


def _describe(record: ActionRecord, action: str) -> str:
    if record.same_action:
        return "the same action"
    if record.action == action:
        return f"another {action} (other amounts, receiver or installation)"
    return f"a different action ({record.action})"


def duplicate_error(
    key: str, action: str, record: ActionRecord, result: Any = None
) -> DuplicateActionError:
    """The error for a refused attempt: what became of the earlier one, and what to do.

    ``result`` is the earlier answer as a model, passed on only for the same action.
    """
    what = _describe(record, action)
    if record.state == "unknown":
        why = (
            "the worker sending it stopped before recording an answer"
            if record.lapsed
            else "the request ended without an answer that settles it"
        )
        return ActionOutcomeUnknownError(
            f"idempotency key {key!r} was already used for {what} and its outcome is unknown "
            f"({why}); it is not sent again. Reconcile: list the organization's credit "
            "requests or reservations, or wait for the organizationTransaction / "
            "warehouseTransaction webhook. Only if it certainly did not happen, call "
            "forget_action(key) and try again.",
            key=key,
            state="unknown",
            same_action=record.same_action,
        )
    if record.state == "pending":
        tail = "that attempt is still in flight (here or on another worker)"
    elif record.state == "rejected":
        tail = (
            f"the server refused it (HTTP {record.status}); if you fixed the cause, call "
            "forget_action(key) to use the key again"
        )
    else:
        tail = (
            "it was done"
            + (" (its answer is this error's result)" if result is not None else "")
            + ". If that earlier call is known to have failed without effect, call "
            "forget_action(key) first"
        )
    return DuplicateActionError(
        f"idempotency key {key!r} was already used for {what}; it is not sent again: {tail}.",
        key=key,
        state=record.state,
        same_action=record.same_action,
        status=record.status,
        result=result if record.same_action else None,
    )


def action_outcome(exc: BaseException, path: str) -> tuple[Outcome | None, int | None]:
    """What a failed keyed action tells about the server: ``(None, _)`` when the request
    certainly never left (release the key), else the outcome to record.

    Only a 4xx on the action itself is a refusal (the server did nothing); a 429 there is
    also "not done", and releasing its key lets the caller try again after ``Retry-After``.
    Anything that may have reached the server without a clear answer — a timeout, a cut
    connection, a 5xx, a redirect, a cancellation — is ``unknown``.
    """
    if isinstance(exc, (BackoffPausedError, InvalidArgumentError, TokenError, SignerError)):
        return None, None
    if isinstance(exc, APIError):
        if exc.path != path:
            return None, None  # a token mint failed: the action itself was never sent
        if exc.status == 429:
            return None, None
        if 400 <= exc.status < 500 and not isinstance(exc, RedirectError):
            return "rejected", exc.status
    return "unknown", None


async def settle(
    store: IdempotencyStore,
    claim: ActionClaim,
    outcome: Outcome | None,
    result: Any,
    status: int | None,
) -> None:
    """Record the outcome (or release the claim) without ever hiding the action's own result
    or error: if the store fails now, the pending record's lease runs out and the next
    attempt reports the outcome as unknown, which is safe."""
    try:
        if outcome is None:
            await store.release(claim)
        else:
            await store.complete(claim, outcome, result=result, status=status)
    except ICRError as exc:
        logger.warning(
            "could not record the outcome of a keyed credit action (%s); a later attempt "
            "with the same key will report it as unknown",
            type(exc).__name__,
        )


@attrs.define
class _Entry:
    action: str
    fingerprint: str
    owner: str
    state: ActionState = "pending"
    result: Any = None
    status: int | None = None
    expires_at: float = 0.0


class MemoryIdempotencyStore:
    """The default ``IdempotencyStore``: keys in this process's memory (bounded, LRU).

    It protects one process (one ``AsyncICRClient`` and every client derived from it); a
    restart or a second worker does not know what it sent. Use
    ``icr_async.contrib.redis.RedisIdempotencyStore`` for a fleet. ``ttl`` seconds after its
    last use a key is forgotten; past ``max_entries`` the least recently used go first.
    """

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_KEY_TTL,
        max_entries: int = MAX_REMEMBERED_ACTIONS,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise ConfigurationError(f"ttl must be a positive number of seconds, got {ttl!r}")
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"max_entries must be a positive integer, got {max_entries!r}")
        self.ttl: float = float(ttl)
        """Seconds a key is remembered after its last use."""
        self.max_entries: int = max_entries
        """The most keys remembered; past it the least recently used go first."""
        self._clock: Clock = clock or time.time
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    def claim_now(
        self, scope: str, key: str, *, action: str, fingerprint: str
    ) -> ActionClaim | ActionRecord:
        """:meth:`claim` without awaiting (nothing here does I/O)."""
        now = self._clock()
        name = (scope, key)
        entry = self._entries.get(name)
        if entry is not None and entry.expires_at <= now:
            del self._entries[name]
            entry = None
        if entry is not None:
            self._entries.move_to_end(name)
            return ActionRecord(
                state=entry.state,
                action=entry.action,
                same_action=entry.action == action and entry.fingerprint == fingerprint,
                result=entry.result,
                status=entry.status,
            )
        owner = secrets.token_hex(8)
        self._entries[name] = _Entry(action, fingerprint, owner, expires_at=now + self.ttl)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return ActionClaim(scope=scope, key=key, owner=owner)

    async def claim(
        self, scope: str, key: str, *, action: str, fingerprint: str, lease: float
    ) -> ActionClaim | ActionRecord:
        """``IdempotencyStore.claim``. ``lease`` is not needed in one process: the record
        cannot outlive the worker that holds it."""
        return self.claim_now(scope, key, action=action, fingerprint=fingerprint)

    async def complete(
        self,
        claim: ActionClaim,
        outcome: Outcome,
        *,
        result: Any = None,
        status: int | None = None,
    ) -> None:
        """``IdempotencyStore.complete``."""
        entry = self._entries.get((claim.scope, claim.key))
        if entry is None or entry.owner != claim.owner:
            return
        entry.state = outcome
        entry.result = result
        entry.status = status

    async def release(self, claim: ActionClaim) -> None:
        """``IdempotencyStore.release``."""
        name = (claim.scope, claim.key)
        entry = self._entries.get(name)
        if entry is not None and entry.owner == claim.owner:
            del self._entries[name]

    async def forget(self, scope: str, key: str) -> bool:
        """``IdempotencyStore.forget``."""
        return self.forget_now(scope, key)

    def forget_now(self, scope: str, key: str) -> bool:
        """:meth:`forget` without awaiting."""
        return self._entries.pop((scope, key), None) is not None

    def known(self, scope: str, key: str) -> bool:
        """Whether ``key`` is recorded (in any state)."""
        return (scope, key) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<MemoryIdempotencyStore keys={len(self._entries)}>"


class ActionRegistry:
    """The synchronous face of an in-memory store for one scope (kept for code written
    against earlier releases): ``claim(key, action, fingerprint)`` raises
    ``DuplicateActionError`` for a known key."""

    __slots__ = ("store",)

    def __init__(self, max_entries: int = MAX_REMEMBERED_ACTIONS) -> None:
        self.store = MemoryIdempotencyStore(max_entries=max_entries)

    def claim(self, key: str, action: str, fingerprint: str) -> None:
        """Record ``key`` or raise ``DuplicateActionError`` if it was used before."""
        got = self.store.claim_now("", key, action=action, fingerprint=fingerprint)
        if isinstance(got, ActionRecord):
            raise duplicate_error(key, action, got)

    def forget(self, key: str) -> bool:
        """Drop ``key``; ``True`` if it was remembered."""
        return self.store.forget_now("", key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.store.known("", key)

    def __len__(self) -> int:
        return len(self.store)
