"""A fleet of real worker processes through a Redis outage, and a worker killed between its
idempotency claim and its request.

With Redis down, tokens and back-off fall back to each process, so reads go on; a keyed
credit action is refused *before it is sent* (``SharedCacheUnavailableError``), so retrying
it later is safe. Idempotency records are durable state: the redis-server here persists
every write before answering it (``appendonly yes``, ``appendfsync always``), as a Redis
holding idempotency keys must (docs/fleets.md, "When Redis is down, slow or flushed").
Workers are ``tests/_redis_server.py`` run as scripts; the ledger counts executions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from _redis_server import Fleet, RedisServer, require_redis_server, serve_fleet

from icr_async import (
    ActionClaim,
    ActionOutcomeUnknownError,
    ActionRecord,
    AsyncICRClient,
    DuplicateActionError,
    RetirementData,
)
from icr_async.contrib.redis import RedisIdempotencyStore, SharedCacheUnavailableError
from icr_async.testing import ICREmulator

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

KEY = bytes(range(32))
ORDERS = 60
WORKERS = 4
# The outcomes an attempt of a keyed action may end with: executed here, refused because
# the key is known (in any state), or refused unsent while Redis was down (then retried).
SETTLED = ("done", "duplicate_done", "duplicate_pending", "duplicate_rejected", "unknown")


@pytest.fixture
async def env(
    private_key_pem: str, tmp_path: Path
) -> AsyncIterator[tuple[Fleet, ICREmulator, str, RedisServer]]:
    """A persistent redis-server of its own (it gets killed), a real-clock emulator with 4
    installations, and a fleet; everything stopped by PID at the end."""
    redis = RedisServer(require_redis_server(), appendonly=True)
    redis.start()
    emulator = ICREmulator(seed=47)
    try:
        async with serve_fleet(
            emulator,
            private_key_pem,
            tmp_path,
            installations=4,
            redis_url=redis.url,
            encryption_key=KEY,
            # Generous on a busy machine (a stalled loop is not an outage); a refused
            # connection fails at once anyway.
            op_timeout=2.0,
            retry_after=0.5,
            max_seconds=120.0,
        ) as (fleet, app_id):
            yield fleet, emulator, app_id, redis
    finally:
        redis.stop()


def _orders(emulator: ICREmulator, app_id: str, count: int) -> list[list[Any]]:
    """``count`` retirements of 1 credit over the installations, each under its own key."""
    installations = emulator.installations(app_id)
    credits = {
        inst["id"]: emulator.ledger.grant_credits(inst["organization"]["id"], amount=count)
        for inst in installations
    }
    orders = []
    for n in range(count):
        inst = installations[n % len(installations)]["id"]
        orders.append([inst, credits[inst], f"order-{n}:retire", f"order-{n}"])
    return orders


def _executions(emulator: ICREmulator) -> Counter[str]:
    """Executions per order (the retirement comment names the order)."""
    counts: Counter[str] = Counter()
    for key, n in emulator.ledger.executions.items():
        comment = key[-1].rsplit('"comment": "', 1)[-1].split('"', 1)[0]
        counts[comment] += n
    return counts


def _action_posts(emulator: ICREmulator) -> int:
    """Credit action requests the emulator received (token mints are POSTs too)."""
    return sum(n for k, n in emulator.stats.posts.items() if "/inventory/requests/" in k[0])


def _client(fleet: Fleet, private_key_pem: str, store: RedisIdempotencyStore) -> AsyncICRClient:
    return AsyncICRClient(
        fleet.base["app_id"],
        private_key_pem,
        base_url=fleet.base["base_url"],
        idempotency_store=store,
        env=False,
    )


@pytest.mark.slow
async def test_killing_redis_mid_run_fails_no_read_and_executes_every_keyed_action_once(
    env: tuple[Fleet, ICREmulator, str, RedisServer],
) -> None:
    fleet, emulator, app_id, redis = env
    orders = _orders(emulator, app_id, ORDERS)
    inst = emulator.installations(app_id)[0]
    started = time.monotonic()
    workers = [
        fleet.spawn(
            f"w{i}",
            mode="mixed",
            orders=orders,  # every worker tries every order
            spread=5.0,  # each one starts at a random moment of the first 5 s
            concurrency=4,
            retry_refused=300,
            target=[inst["id"], f"/organizations/{inst['organization']['id']}"],
            gets=2,
            think=0.02,
            stop_path=str(fleet.stop),
        )
        for i in range(WORKERS)
    ]
    await fleet.wait(lambda: all(w.ready for w in workers), "workers to be ready")
    fleet.go.touch()

    def progress() -> list[dict[str, Any]]:
        return [w.progress() or {"outcomes": {}} for w in workers]

    def settled(outcomes: dict[str, int]) -> int:
        return sum(outcomes.get(k, 0) for k in SETTLED)

    # Every worker has read and settled keyed actions, with most of them still to come.
    await fleet.wait(
        lambda: all(
            p["outcomes"].get("ok", 0) > 0 and settled(p["outcomes"]) > 0 for p in progress()
        ),
        "every worker to make progress",
    )
    redis.kill()
    killed_at = [p["outcomes"] for p in progress()]
    await fleet.wait(
        lambda: sum(p["outcomes"].get("refused", 0) for p in progress()) >= WORKERS,
        "keyed actions to be refused during the outage",
        timeout=30.0,
    )
    await asyncio.sleep(0.5)  # reads go on through the outage
    redis.start()  # with everything it had persisted
    fleet.stop.touch()  # the workers stop reading once every order is settled
    await fleet.wait(lambda: all(w.proc.poll() is not None for w in workers), "workers", 120.0)
    results = [w.result() for w in workers]

    total: Counter[str] = Counter()
    for worker, result in zip(workers, results, strict=True):
        outcomes = result["outcomes"]
        total.update(outcomes)
        assert worker.proc.returncode == 0, worker.stderr()
        # No read failed, no attempt failed otherwise, none was given up on.
        assert not [k for k in outcomes if k.startswith("error_") or k == "gave_up"], outcomes
        assert settled(outcomes) == ORDERS, outcomes  # each order settled once per worker
    # The outage hit real traffic: keyed actions were refused, and reads went on after it.
    assert total["refused"] >= WORKERS, total
    assert total["ok"] > sum(o.get("ok", 0) for o in killed_at), total
    # Every order was executed exactly once, by whichever worker claimed it.
    executions = _executions(emulator)
    assert emulator.ledger.duplicate_executions == 0
    assert len(executions) == ORDERS, executions
    assert set(executions.values()) == {1}, executions
    assert total["done"] == ORDERS, total
    assert total["duplicate_rejected"] == 0, total
    print(f"\noutage run: {dict(total)} in {time.monotonic() - started:.1f} s")


async def test_a_worker_killed_between_claim_and_send_leaves_unknown_then_forget_sends_once(
    env: tuple[Fleet, ICREmulator, str, RedisServer], private_key_pem: str, tmp_path: Path
) -> None:
    fleet, emulator, app_id, _ = env
    orders = _orders(emulator, app_id, 1)
    installation, credit_id, key, comment = orders[0]
    stall = tmp_path / "claimed"
    lease = 1.5
    worker = fleet.spawn(
        "dying", mode="actions", orders=orders, lease=lease, stall_before_path=str(stall)
    )
    await fleet.wait(lambda: worker.ready, "the worker")
    fleet.go.touch()
    await fleet.wait(stall.exists, "the worker to claim the key and be about to send")
    claimed_at = time.monotonic()
    worker.kill()  # claimed, never sent
    assert _action_posts(emulator) == 0
    assert not _executions(emulator)

    store = RedisIdempotencyStore(fleet.base["redis_url"], encryption_key=KEY, op_timeout=5.0)
    client = _client(fleet, private_key_pem, store)
    inst = client.installation(installation)
    data = RetirementData(reason="fleet test", beneficiary_name="Fleet", comment=comment)

    async def retire() -> None:
        await inst.retire_credits(
            credit_id=credit_id, amount=1, retirement_data=data, idempotency_key=key
        )

    probe = aioredis.Redis.from_url(fleet.base["redis_url"])
    try:
        # Within the dead worker's lease: still "pending" (it might yet send), not sent.
        leases = [name async for name in probe.scan_iter(match="icr:idem:*:lease")]
        assert len(leases) == 1
        left = await probe.pttl(leases[0])  # the claim came before a token was minted
        with pytest.raises(DuplicateActionError) as pending:
            await retire()
        if left > 300:  # milliseconds: this attempt certainly came within the lease
            assert pending.value.state == "pending"
        await asyncio.sleep(max(0.0, claimed_at + lease + 0.2 - time.monotonic()))
        for _ in range(2):  # then "unknown" every time, never resent
            with pytest.raises(ActionOutcomeUnknownError, match="stopped before recording"):
                await retire()
        assert _action_posts(emulator) == 0
        # The user reconciles: the ledger shows no such retirement, so the key is forgotten
        # and the order tried again; it is executed once, and the key is known again.
        assert _executions(emulator)[comment] == 0
        assert await inst.forget_action(key)
        await retire()
        with pytest.raises(DuplicateActionError) as again:
            await retire()
        assert again.value.state == "done"
        assert again.value.result is not None
    finally:
        await probe.aclose()
        await client.aclose()
        await store.aclose()
    assert _executions(emulator) == Counter({comment: 1})
    assert emulator.ledger.duplicate_executions == 0


# ------------------------------------------------- claims of actions that never left


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A persistent redis-server for one test (it gets paused or killed), stopped by PID."""
    server = RedisServer(require_redis_server(), appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _store(redis: RedisServer) -> RedisIdempotencyStore:
    return RedisIdempotencyStore(
        redis.url, encryption_key=KEY, op_timeout=0.3, retry_after=0.05, log_interval=0.0
    )


async def _claim(store: RedisIdempotencyStore, key: str) -> ActionClaim | ActionRecord:
    return await store.claim("app|url", key, action="retire", fingerprint="f", lease=60.0)


async def _until_claimed(store: RedisIdempotencyStore, key: str) -> ActionClaim | ActionRecord:
    """Claim ``key`` as a retrying caller does: again while Redis is not back (bounded)."""
    for _ in range(200):  # 10 s at most
        try:
            return await _claim(store, key)
        except SharedCacheUnavailableError:
            await asyncio.sleep(0.05)
    raise AssertionError("Redis did not come back")


async def test_a_claim_whose_answer_was_lost_is_taken_back_by_its_process(
    own_redis: RedisServer,
) -> None:
    worker, other = _store(own_redis), _store(own_redis)
    probe = aioredis.Redis.from_url(own_redis.url)
    try:
        assert isinstance(await _claim(worker, "warm-up"), ActionClaim)  # scripts loaded
        own_redis.pause()
        try:
            with pytest.raises(SharedCacheUnavailableError):
                await _claim(worker, "k-1")  # nothing is sent after this
        finally:
            own_redis.resume()
        # Redis ran the claim once it could: the key is pending, its answer never came.
        name = worker.redis_key("app|url", "k-1")
        for _ in range(100):  # bounded: 5 s
            if await probe.exists(name):
                break
            await asyncio.sleep(0.05)
        assert await probe.hget(name, "s") == b"pending"
        refused = await _until_claimed(other, "k-1")
        assert isinstance(refused, ActionRecord)
        assert refused.state == "pending"  # to every other worker: in flight
        # The process that made it knows the action never left: it takes the key back
        # (it would otherwise stay "pending", then "unknown", for an action never sent).
        claim = await _until_claimed(worker, "k-1")
        assert isinstance(claim, ActionClaim)
        await worker.complete(claim, "done", result={"id": "cr-1"})
        done = await _claim(other, "k-1")
        assert isinstance(done, ActionRecord)
        assert (done.state, done.result) == ("done", {"id": "cr-1"})
        # Taken back once: a later attempt here is refused like anyone's.
        again = await _claim(worker, "k-1")
        assert isinstance(again, ActionRecord)
        assert again.state == "done"
    finally:
        await probe.aclose()
        await worker.aclose()
        await other.aclose()


async def test_a_release_that_failed_lets_its_process_claim_the_key_again(
    own_redis: RedisServer,
) -> None:
    worker, other = _store(own_redis), _store(own_redis)
    try:
        claim = await _claim(worker, "k-2")
        assert isinstance(claim, ActionClaim)
        own_redis.kill()  # the request never left (say, no token), and now Redis is gone
        with pytest.raises(SharedCacheUnavailableError):
            await worker.release(claim)
        own_redis.start()  # with the pending record it had persisted
        pending = await _until_claimed(other, "k-2")
        assert isinstance(pending, ActionRecord)
        assert pending.state == "pending"
        again = await _until_claimed(worker, "k-2")
        assert isinstance(again, ActionClaim)
        assert again.owner == claim.owner
    finally:
        await worker.aclose()
        await other.aclose()


async def test_an_outcome_whose_record_redis_lost_is_counted_and_warned_about(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(own_redis)
    probe = aioredis.Redis.from_url(own_redis.url)
    try:
        claim = await _claim(store, "k-3")
        assert isinstance(claim, ActionClaim)
        await probe.flushall()  # what a restart without persistence does
        with caplog.at_level(logging.WARNING, logger="icr_async"):
            await store.complete(claim, "done", result={"id": "cr-3"})
        assert store.stats.lost == 1
        assert "appendonly" in caplog.text
        assert "k-3" not in caplog.text  # key names stay out of logs
    finally:
        await probe.aclose()
        await store.aclose()
