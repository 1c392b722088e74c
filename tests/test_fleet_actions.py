"""Fleets of real worker processes on one emulator and one redis-server: keyed credit actions
are executed exactly once, whoever retries them and whatever dies; one 429 pauses everyone.

Workers are ``tests/_redis_server.py`` run as scripts (``"mode"`` in their config). The
emulator is served by this test's loop on the real clock; the ledger counts executions and
the emulator's rate limit records every 429 it answered. The big runs are ``slow`` (CI runs
them with ``pytest -m slow``); a small version of each property runs by default.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from _redis_server import Fleet, RedisServer, serve_fleet

from icr_async import (
    ActionOutcomeUnknownError,
    AsyncICRClient,
    DuplicateActionError,
    RetirementData,
)
from icr_async.contrib.redis import RedisIdempotencyStore
from icr_async.testing import ICREmulator
from icr_async.testing._faults import RateLimit

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

KEY = bytes(range(32))


@pytest.fixture
async def env(
    redis_server: RedisServer, private_key_pem: str, tmp_path: Path
) -> AsyncIterator[tuple[Fleet, ICREmulator, str]]:
    """A real-clock emulator with 8 installations, a flushed Redis, and a fleet."""
    emulator = ICREmulator(seed=31)
    flush = aioredis.Redis.from_url(redis_server.url)
    await flush.flushall()
    await flush.aclose()
    async with serve_fleet(
        emulator,
        private_key_pem,
        tmp_path,
        installations=8,
        redis_url=redis_server.url,
        encryption_key=KEY,
        op_timeout=5.0,
        max_seconds=120.0,
    ) as (fleet, app_id):
        yield fleet, emulator, app_id


def _orders(emulator: ICREmulator, app_id: str, count: int) -> list[list[Any]]:
    """``count`` retirements of 1 credit, spread over the installations, each its own key."""
    orders = []
    installations = emulator.installations(app_id)
    credits = {}
    for inst in installations:
        org = inst["organization"]["id"]
        credits[inst["id"]] = (org, emulator.ledger.grant_credits(org, amount=count))
    for n in range(count):
        inst = installations[n % len(installations)]["id"]
        orders.append([inst, credits[inst][1], f"order-{n}:retire", f"order-{n}"])
    return orders


def _executions(emulator: ICREmulator) -> Counter[str]:
    """Executions per order (the retirement comment names the order)."""
    counts: Counter[str] = Counter()
    for key, n in emulator.ledger.executions.items():
        comment = key[-1].rsplit('"comment": "', 1)[-1].split('"', 1)[0]
        counts[comment] += n
    return counts


def _outcomes(results: list[dict[str, Any]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for result in results:
        total.update(result["outcomes"])
    return total


async def _retry_fleet(
    fleet: Fleet,
    emulator: ICREmulator,
    orders: list[list[Any]],
    workers: int,
    kills: int,
    lease: float | None = None,
) -> Counter[str]:
    """Every worker tries every order (random delays); ``kills`` workers are SIGKILLed
    mid-run and replaced. Returns the outcomes the surviving workers saw."""
    extra = {} if lease is None else {"lease": lease}
    spawned = [
        fleet.spawn(f"w{i}", mode="actions", orders=orders, max_delay=0.01, concurrency=4, **extra)
        for i in range(workers)
    ]
    await fleet.wait(lambda: all(w.ready for w in spawned), "workers to be ready")
    fleet.go.touch()
    for k in range(kills):
        victim = spawned[k % workers]
        await asyncio.sleep(0.3)
        victim.kill()
        spawned.append(
            fleet.spawn(
                f"r{k}", mode="actions", orders=orders, max_delay=0.01, concurrency=4, **extra
            )
        )
    survivors = [w for w in spawned if w.proc.returncode is None or w.proc.returncode == 0]
    deadline = time.monotonic() + 150
    while not all(w.proc.poll() is not None for w in survivors):  # bounded by the deadline
        assert time.monotonic() < deadline, "workers did not finish"
        await asyncio.sleep(0.05)
    for worker in survivors:
        assert worker.proc.returncode == 0, worker.stderr()
    return _outcomes([w.result() for w in survivors])


async def _reconcile(
    private_key_pem: str, fleet: Fleet, emulator: ICREmulator, orders: list[list[Any]]
) -> int:
    """What a user does with "outcome unknown": look at the ledger (here: the emulator's
    executions, as listing credit requests would show), forget the key of any order that
    did not happen, and try again. Returns how many orders that concerned."""
    store = RedisIdempotencyStore(fleet.base["redis_url"], encryption_key=KEY, op_timeout=5.0)
    client = AsyncICRClient(
        fleet.base["app_id"],
        private_key_pem,
        base_url=fleet.base["base_url"],
        idempotency_store=store,
        env=False,
    )
    redone = 0
    stuck: list[str] = []
    try:
        executed = _executions(emulator)
        for installation, credit_id, key, comment in orders:
            inst = client.installation(installation)
            data = RetirementData(reason="fleet test", beneficiary_name="Fleet", comment=comment)
            try:
                await inst.retire_credits(
                    credit_id=credit_id, amount=1, retirement_data=data, idempotency_key=key
                )
            except ActionOutcomeUnknownError:
                if executed[comment] == 0:
                    await inst.forget_action(key)
                    await inst.retire_credits(
                        credit_id=credit_id, amount=1, retirement_data=data, idempotency_key=key
                    )
                    redone += 1
            except DuplicateActionError as exc:
                # Every worker has finished, and the caller waited out the leases: a claim
                # still "pending" here would be a record that never tells the truth.
                if exc.state == "pending":
                    stuck.append(comment)
            else:
                redone += 1  # no worker ever claimed it (cannot happen when all finished)
    finally:
        await client.aclose()
        await store.aclose()
    assert not stuck, f"still pending after every lease ran out: {stuck}"
    return redone


async def test_two_workers_retrying_the_same_orders_execute_each_once(
    env: tuple[Fleet, ICREmulator, str],
) -> None:
    fleet, emulator, app_id = env
    orders = _orders(emulator, app_id, 24)
    outcomes = await _retry_fleet(fleet, emulator, orders, workers=2, kills=0)
    executions = _executions(emulator)
    assert len(executions) == 24
    assert set(executions.values()) == {1}
    assert emulator.ledger.duplicate_executions == 0
    assert outcomes["done"] == 24
    # Every other attempt was refused with the recorded answer, or while still in flight.
    assert outcomes["duplicate_done"] + outcomes["duplicate_pending"] == 24
    assert outcomes["with_result"] == outcomes["duplicate_done"]
    assert not [k for k in outcomes if k.startswith("error_") or k == "unknown"]


async def test_a_worker_killed_between_send_and_record_leaves_unknown_not_a_resend(
    env: tuple[Fleet, ICREmulator, str], private_key_pem: str, tmp_path: Path
) -> None:
    fleet, emulator, app_id = env
    orders = _orders(emulator, app_id, 1)
    stall = tmp_path / "stalled"
    worker = fleet.spawn("dying", mode="actions", orders=orders, lease=1.0, stall_path=str(stall))
    await fleet.wait(lambda: worker.ready, "the worker")
    fleet.go.touch()
    await fleet.wait(stall.exists, "the answer to reach the worker")
    worker.kill()  # the server acted; the worker never recorded it
    assert sum(_executions(emulator).values()) == 1
    await asyncio.sleep(1.2)  # its lease runs out
    store = RedisIdempotencyStore(fleet.base["redis_url"], encryption_key=KEY, op_timeout=5.0)
    client = AsyncICRClient(
        app_id,
        private_key_pem,
        base_url=fleet.base["base_url"],
        idempotency_store=store,
        env=False,
    )
    installation, credit_id, key, comment = orders[0]
    posts = sum(emulator.stats.posts.values())
    try:
        for _ in range(2):  # reported every time, never resent
            with pytest.raises(ActionOutcomeUnknownError) as caught:
                await client.installation(installation).retire_credits(
                    credit_id=credit_id,
                    amount=1,
                    retirement_data=RetirementData(
                        reason="fleet test", beneficiary_name="Fleet", comment=comment
                    ),
                    idempotency_key=key,
                )
            assert "stopped before recording" in str(caught.value)
    finally:
        await client.aclose()
        await store.aclose()
    assert sum(emulator.stats.posts.values()) == posts
    assert sum(_executions(emulator).values()) == 1


@pytest.mark.slow
async def test_eight_processes_retry_200_orders_with_kills_and_execute_each_once(
    env: tuple[Fleet, ICREmulator, str], private_key_pem: str
) -> None:
    fleet, emulator, app_id = env
    orders = _orders(emulator, app_id, 200)
    started = time.monotonic()
    # A short lease: a worker killed between its claim and the server leaves the order
    # "pending" until the lease runs out (CI saw it: 199 of 200 when the reconciliation
    # came within the default lease). A live call that outlasts it is only "unknown" to
    # the others; its owner still records the answer.
    lease = 3.0
    outcomes = await _retry_fleet(fleet, emulator, orders, workers=8, kills=4, lease=lease)
    assert emulator.ledger.duplicate_executions == 0
    assert not [k for k in outcomes if k.startswith("error_")], outcomes
    # Orders a killed worker left mid-request are "pending", then "unknown" once its lease
    # has run out, until reconciled.
    await asyncio.sleep(lease + 0.5)
    await _reconcile(private_key_pem, fleet, emulator, orders)
    executions = _executions(emulator)
    assert len(executions) == 200
    assert set(executions.values()) == {1}
    assert time.monotonic() - started < 170


# ------------------------------------------------------------------- shared back-off


async def _hammer(
    fleet: Fleet, workers: int, target: list[str], seconds: float, shared: bool
) -> list[dict[str, Any]]:
    spawned = [
        fleet.spawn(
            f"h{'s' if shared else 'm'}{i}",
            mode="hammer",
            target=target,
            seconds=seconds,
            concurrency=2,
            think=0.05,
            shared_backoff=shared,
        )
        for i in range(workers)
    ]
    await fleet.wait(lambda: all(w.ready for w in spawned), "workers to be ready")
    fleet.go.touch()
    await fleet.wait(lambda: all(w.proc.poll() is not None for w in spawned), "workers")
    fleet.go.unlink()
    return [w.result() for w in spawned]


def _periods_and_spread(emulator: ICREmulator) -> tuple[list[int], float]:
    """429s per back-off period, and the latest a 429 came after its period's first."""
    counts = emulator.rate_limiter.periods()
    spread = 0.0
    start = end = -1.0
    for event in emulator.rate_limiter.events:
        if event.at >= end:  # the same grouping as periods()
            start, end = event.at, float(math.ceil(event.until))
        spread = max(spread, event.at - start)
    return counts, spread


async def _back_off_run(
    fleet: Fleet, emulator: ICREmulator, app_id: str, workers: int, seconds: float
) -> dict[str, Any]:
    inst = emulator.installations(app_id)[0]
    target = [inst["id"], f"/organizations/{inst['organization']['id']}"]
    emulator.rate_limiter.limit = RateLimit(requests=20, per=1.0)
    report: dict[str, Any] = {}
    for shared in (False, True):
        emulator.reset_stats()
        results = await _hammer(fleet, workers, target, seconds, shared)
        periods, spread = _periods_and_spread(emulator)
        report["shared" if shared else "alone"] = {
            "rate_limited": emulator.stats.rate_limited,
            "periods": periods,
            "spread": spread,
            "failed": sum(v for r in results for k, v in r["outcomes"].items() if k != "ok"),
            "ok": sum(r["outcomes"].get("ok", 0) for r in results),
        }
    return report


@pytest.mark.slow  # real time and real processes: the in-process property is in test_backoff
async def test_three_workers_back_off_together(env: tuple[Fleet, ICREmulator, str]) -> None:
    fleet, emulator, app_id = env
    report = await _back_off_run(fleet, emulator, app_id, workers=3, seconds=2.5)
    shared = report["shared"]
    # No request fails with the shared back-off. Without it (today's per-request waits) a
    # request can meet three 429s in a row on a busy machine and fail: CI saw 1 in 75.
    assert shared["failed"] == 0, report
    assert shared["periods"], report  # the limit was reached
    # Each period's 429s are the ones already in flight when the first came back: a few,
    # within a moment, never a stream through the pause.
    assert max(shared["periods"]) <= 3 * 2, report
    assert shared["spread"] < 0.5, report


@pytest.mark.slow
async def test_eight_workers_back_off_together(env: tuple[Fleet, ICREmulator, str]) -> None:
    fleet, emulator, app_id = env
    report = await _back_off_run(fleet, emulator, app_id, workers=8, seconds=4.0)
    shared, alone = report["shared"], report["alone"]
    # No request fails with the shared back-off. Without it (today's per-request waits) a
    # request can meet three 429s in a row on a busy machine and fail: CI saw 1 in 75.
    assert shared["failed"] == 0, report
    assert max(shared["periods"]) <= 8 * 2, report
    assert shared["spread"] < 0.5, report
    # Measured: 16 per period without sharing (one per request in flight), 1-3 with it on a
    # quiet machine; on a busy one some periods see all 8 workers' in-flight requests (CI
    # once measured 24 against 64), so the check is "well under half", not a quiet ratio.
    # The comparison means something only when the run without sharing kept hitting the
    # limit: on a machine too busy to send 20 requests a second after the first burst, both
    # runs see the one burst's in-flight requests and nothing else (CI saw the no-sharing run
    # reach the limit once in 4 s: 16 against 14). The checks above hold on any machine.
    if len(alone["periods"]) >= 3:
        assert shared["rate_limited"] * 2 <= alone["rate_limited"], report
