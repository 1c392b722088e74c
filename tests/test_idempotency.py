"""Idempotency keys: recorded before sending, completed after, shared by a fleet on Redis.

Every count of executions is the emulator ledger's (``ledger.executions``); the Redis tests
use a real ``redis-server`` this module starts and stops by PID.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from _redis_server import RedisServer, require_redis_server

from icr_async import (
    ActionOutcomeUnknownError,
    AsyncICRClient,
    ConfigurationError,
    CreditRequest,
    DuplicateActionError,
    IdempotencyStore,
    MemoryIdempotencyStore,
    RateLimitedError,
    RetirementData,
    RetryPolicy,
    ServerError,
)
from icr_async.testing import Fault, ICREmulator

pytestmark = pytest.mark.anyio

KEY = bytes(range(32))
RETIRE = "/organizations/*/inventory/requests/retire"


def _data(comment: str = "order") -> RetirementData:
    return RetirementData(reason="offset", beneficiary_name="Acme Buyer", comment=comment)


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _inst(emulator: ICREmulator, app_id: str, index: int = 0) -> tuple[str, str]:
    inst = emulator.installations(app_id)[index]
    return inst["id"], inst["organization"]["id"]


# ------------------------------------------------------------------ in one process


async def test_a_repeat_of_a_done_action_carries_its_recorded_answer(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    installation, org = _inst(emulator, app_id)
    credit = emulator.ledger.grant_credits(org, amount=10)
    inst = client.installation(installation)
    first = await inst.retire_credits(
        credit_id=credit, amount=2, retirement_data=_data(), idempotency_key="o-1"
    )
    with pytest.raises(DuplicateActionError) as caught:
        await inst.retire_credits(
            credit_id=credit, amount=2, retirement_data=_data(), idempotency_key="o-1"
        )
    assert not isinstance(caught.value, ActionOutcomeUnknownError)
    assert (caught.value.state, caught.value.same_action) == ("done", True)
    assert isinstance(caught.value.result, CreditRequest)
    assert caught.value.result == first
    with pytest.raises(DuplicateActionError) as other:
        await inst.retire_credits(
            credit_id=credit, amount=3, retirement_data=_data(), idempotency_key="o-1"
        )
    assert other.value.result is None  # another action's answer is never handed out
    wire = {"reason": "offset", "beneficiaryName": "Acme Buyer", "comment": "order"}
    assert emulator.ledger.times_executed(org, "retire", credit, 2, retirement_data=wire) == 1
    assert sum(emulator.ledger.executions.values()) == 1


async def test_a_5xx_leaves_the_outcome_unknown_and_the_next_attempt_says_so(
    no_retry_client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    installation, org = _inst(emulator, app_id)
    credit = emulator.ledger.grant_credits(org, amount=10)
    inst = no_retry_client.installation(installation)
    emulator.faults.add(Fault(method="POST", path=RETIRE, status=502, times=1))
    with pytest.raises(ServerError):
        await inst.retire_credits(
            credit_id=credit, amount=1, retirement_data=_data(), idempotency_key="o-2"
        )
    posts = sum(emulator.stats.posts.values())
    with pytest.raises(ActionOutcomeUnknownError) as caught:
        await inst.retire_credits(
            credit_id=credit, amount=1, retirement_data=_data(), idempotency_key="o-2"
        )
    assert caught.value.state == "unknown"
    assert "credit requests" in str(caught.value)  # tells how to reconcile
    assert "Acme" not in str(caught.value)
    assert sum(emulator.stats.posts.values()) == posts  # not sent again
    assert await inst.forget_action("o-2") is True
    await inst.retire_credits(
        credit_id=credit, amount=1, retirement_data=_data(), idempotency_key="o-2"
    )
    assert sum(emulator.ledger.executions.values()) == 1


async def test_a_429_releases_the_key_so_a_later_try_goes_out(
    no_retry_client: AsyncICRClient, emulator: ICREmulator, app_id: str, clock: Any
) -> None:
    installation, org = _inst(emulator, app_id)
    credit = emulator.ledger.grant_credits(org, amount=10)
    inst = no_retry_client.installation(installation)
    await inst.get_token()
    emulator.faults.add(Fault(method="POST", path=RETIRE, status=429, retry_after=3, times=1))
    with pytest.raises(RateLimitedError):
        await inst.retire_credits(
            credit_id=credit, amount=1, retirement_data=_data(), idempotency_key="o-3"
        )
    clock.advance(3)
    await inst.retire_credits(
        credit_id=credit, amount=1, retirement_data=_data(), idempotency_key="o-3"
    )
    assert sum(emulator.ledger.executions.values()) == 1


async def test_store_configuration(private_key_pem: str) -> None:
    assert isinstance(MemoryIdempotencyStore(), IdempotencyStore)
    with pytest.raises(ConfigurationError, match="ttl"):
        MemoryIdempotencyStore(ttl=0)
    with pytest.raises(ConfigurationError, match="IdempotencyStore"):
        AsyncICRClient(
            "app",
            private_key_pem,
            idempotency_store=object(),  # type: ignore[arg-type]
            env=False,
        )


async def test_memory_keys_expire_after_their_ttl(clock: Any) -> None:
    store = MemoryIdempotencyStore(ttl=60, clock=clock)
    claim = await store.claim("app", "k", action="retire", fingerprint="f", lease=1)
    await store.complete(claim, "done", result={"id": "r"})  # type: ignore[arg-type]
    again = await store.claim("app", "k", action="retire", fingerprint="f", lease=1)
    assert getattr(again, "state", None) == "done"
    clock.advance(61)
    fresh = await store.claim("app", "k", action="retire", fingerprint="f", lease=1)
    assert getattr(fresh, "owner", None)


# ---------------------------------------------------------------------- across Redis


@pytest.fixture
async def rds(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A raw client on the module's server, flushed before the test."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def make_store(redis_server: RedisServer) -> AsyncIterator[Any]:
    """Build RedisIdempotencyStores (closed at the end)."""
    from icr_async.contrib.redis import RedisIdempotencyStore

    made: list[RedisIdempotencyStore] = []

    def factory(url: str | None = None, **kwargs: Any) -> RedisIdempotencyStore:
        kwargs.setdefault("encryption_key", KEY)
        kwargs.setdefault("op_timeout", 5.0)
        store = RedisIdempotencyStore(url or redis_server.url, **kwargs)
        made.append(store)
        return store

    yield factory
    for store in made:
        await store.aclose()


@pytest.mark.redis
async def test_two_workers_share_keys_and_the_answer(
    make_client: Any, make_store: Any, emulator: ICREmulator, app_id: str, rds: aioredis.Redis
) -> None:
    installation, org = _inst(emulator, app_id)
    credit = emulator.ledger.grant_credits(org, amount=10)
    first: AsyncICRClient = make_client(idempotency_store=make_store())
    second: AsyncICRClient = make_client(idempotency_store=make_store())
    done = await first.installation(installation).retire_credits(
        credit_id=credit, amount=4, retirement_data=_data("order-77"), idempotency_key="order-77"
    )
    with pytest.raises(DuplicateActionError) as caught:
        await second.installation(installation).retire_credits(
            credit_id=credit,
            amount=4,
            retirement_data=_data("order-77"),
            idempotency_key="order-77",
        )
    assert caught.value.result == done
    assert sum(emulator.ledger.executions.values()) == 1
    # Nothing readable in Redis: not the key, not the beneficiary, not the organization.
    dump = b""
    for name in await rds.keys("*"):
        dump += _raw(name)
        if await rds.type(name) == b"hash":
            dump += b"".join(_raw(v) for v in (await rds.hgetall(name)).values())
    assert b"order-77" not in dump
    assert b"Acme" not in dump
    assert org.encode() not in dump
    assert await second.installation(installation).forget_action("order-77") is True
    assert await rds.keys("*idem*") == []


@pytest.mark.redis
async def test_a_lapsed_lease_is_reported_as_unknown_for_good(make_store: Any) -> None:
    store = make_store()
    claim = await store.claim("app|url", "k-1", action="retire", fingerprint="f", lease=0.2)
    assert claim.owner
    refused = await store.claim("app|url", "k-1", action="retire", fingerprint="f", lease=5)
    assert (refused.state, refused.lapsed) == ("pending", False)
    await asyncio.sleep(0.3)  # the claimant "died": its lease runs out
    lapsed = await store.claim("app|url", "k-1", action="retire", fingerprint="f", lease=5)
    assert (lapsed.state, lapsed.lapsed, lapsed.same_action) == ("unknown", True, True)
    # The worker comes back after all with the real outcome: that beats "unknown".
    await store.complete(claim, "done", result={"id": "cr-1"})
    known = await store.claim("app|url", "k-1", action="retire", fingerprint="f", lease=5)
    assert (known.state, known.result) == ("done", {"id": "cr-1"})
    other = await store.claim("app|url", "k-1", action="retire", fingerprint="g", lease=5)
    assert (other.same_action, other.result) == (False, None)
    assert store.stats.lapsed == 1


@pytest.mark.redis
async def test_redis_down_refuses_keyed_actions_without_sending(
    make_client: Any, emulator: ICREmulator, app_id: str
) -> None:
    from icr_async.contrib.redis import RedisIdempotencyStore, SharedCacheUnavailableError

    server = RedisServer(require_redis_server())
    server.start()
    store = RedisIdempotencyStore(server.url, encryption_key=KEY, op_timeout=0.5)
    try:
        client: AsyncICRClient = make_client(idempotency_store=store, retry=RetryPolicy.disabled())
        installation, org = _inst(emulator, app_id)
        credit = emulator.ledger.grant_credits(org, amount=10)
        inst = client.installation(installation)
        await inst.retire_credits(
            credit_id=credit, amount=1, retirement_data=_data("a"), idempotency_key="a"
        )
        server.kill()
        posts = sum(emulator.stats.posts.values())
        with pytest.raises(SharedCacheUnavailableError, match="unavailable"):
            await inst.retire_credits(
                credit_id=credit, amount=1, retirement_data=_data("b"), idempotency_key="b"
            )
        assert sum(emulator.stats.posts.values()) == posts
        # Reads and unkeyed actions do not need the store.
        await inst.get_inventory()
        await inst.retire_credits(credit_id=credit, amount=1, retirement_data=_data("c"))
        assert emulator.ledger.duplicate_executions == 0
    finally:
        await store.aclose()
        server.stop()
