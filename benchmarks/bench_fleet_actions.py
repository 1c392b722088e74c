"""Fleet actions: shared back-off and shared idempotency, N worker processes on one Redis.

Three questions, one run (``python -m benchmarks.bench_fleet_actions``, ``--quick`` to smoke):

1. **429s per back-off period.** N workers (1, 4, 8) hammer one installation of an app the
   emulator limits to R requests/s (fixed one-second windows, 429 + ``Retry-After`` to the
   window's end). Today's behaviour (each request honours only its own ``Retry-After``)
   against ``RedisBackoffStore`` with the pause alone (``adaptive=False``: one 429 pauses
   every worker) and with its default learned fleet rate. Counted by the emulator, with
   the requests that passed per second (ok/s) against the limit.
2. **Duplicate actions.** Every worker retries the same keyed retirements: with the default
   in-memory idempotency store each worker sends each one, with ``RedisIdempotencyStore``
   the ledger executes each exactly once. Also: Redis round trips per keyed action.
3. **Warm GET cost.** One warm client, requests in interleaved slices, client CPU per request
   (the emulator runs in its own process): the Redis stores configured ("on") against the
   defaults ("off") and against a null back-off that is never active (the floor).

The emulator for 1 and 2 runs on a background thread of this process; a ``redis-server``
(Debian's package) is started on a free loopback port and stopped by PID at the end.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from icr_async import AsyncICRClient, RetirementData
from icr_async.testing import ICREmulator, generate_private_key_pem
from icr_async.testing._faults import RateLimit

from ._harness import emulator_process, fmt_ratio, ratio_stats, table
from .bench_fleet import STEP_TIMEOUT, EmulatorThread, _flushall, redis_server

KEY_HEX = "ab" * 32


class NullBackoff:
    """Never active: the floor a back-off check can cost (the null contender)."""

    active = False

    async def wait_time(self, app: str, installation: str | None) -> float:
        """Never paused."""
        return 0.0

    async def pause(self, app: str, installation: str | None, seconds: float) -> None:
        """Forget every pause (today's behaviour: only the request's own retry waits)."""


# ------------------------------------------------------------------ worker processes


async def _work(config: dict[str, Any]) -> dict[str, Any]:
    from icr_async.contrib.redis import (
        RedisBackoffStore,
        RedisIdempotencyStore,
        RedisTokenCache,
    )

    cache = RedisTokenCache(
        config["redis_url"], encryption_key=bytes.fromhex(KEY_HEX), op_timeout=5.0
    )
    shared = config["shared"]
    idem = RedisIdempotencyStore(cache) if shared else None
    backoff = RedisBackoffStore(cache, adaptive=config.get("adaptive", True)) if shared else None
    client = AsyncICRClient(
        config["app_id"],
        config["pem"],
        base_url=config["base_url"],
        token_cache=cache,
        idempotency_store=idem,
        backoff=backoff if backoff is not None else NullBackoff(),
        env=False,
    )
    ok = failed = refused = 0
    async with client:
        if config["mode"] == "hammer":
            installation, path = config["target"]
            stop_at = time.monotonic() + config["seconds"]

            async def hammer() -> None:
                nonlocal ok, failed
                while time.monotonic() < stop_at:  # bounded by stop_at
                    try:
                        await client.installation(installation).request("GET", path)
                        ok += 1
                    except Exception:
                        failed += 1
                    await asyncio.sleep(0.02)

            await asyncio.gather(*(hammer() for _ in range(2)))
        else:
            for installation, credit_id, key in config["orders"]:
                try:
                    await client.installation(installation).retire_credits(
                        credit_id=credit_id,
                        amount=1,
                        retirement_data=RetirementData(
                            reason="bench", beneficiary_name="Bench", comment=key
                        ),
                        idempotency_key=key,
                    )
                    ok += 1
                except Exception as exc:  # DuplicateActionError is the expected refusal
                    refused += type(exc).__name__.endswith("ActionError")
                    failed += not type(exc).__name__.endswith("ActionError")
    commands = idem.stats.commands if idem is not None else 0
    if backoff is not None:
        await backoff.aclose()
    await cache.aclose()
    return {"ok": ok, "failed": failed, "refused": refused, "idem_commands": commands}


def _process(config: dict[str, Any], out: multiprocessing.Queue[dict[str, Any]]) -> None:
    out.put(asyncio.run(_work(config)))


def _fleet(n: int, config: dict[str, Any]) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[dict[str, Any]] = ctx.Queue()
    procs = [ctx.Process(target=_process, args=(config, out), daemon=True) for _ in range(n)]
    for proc in procs:
        proc.start()
    results = []
    try:
        for _ in range(n):
            results.append(out.get(timeout=STEP_TIMEOUT))
    except queue.Empty:
        raise RuntimeError("a worker did not report in time") from None
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
    return results


# ------------------------------------------------------------------------ scenarios


def _fleet_scenarios(
    workers: tuple[int, ...], redis_url: str, *, seconds: float, orders: int, rate: int
) -> list[dict[str, Any]]:
    pem = generate_private_key_pem()
    emulator = ICREmulator(seed=5)
    app = emulator.create_app(8, private_key_pem=pem)
    rows = []
    with EmulatorThread(emulator) as url:
        inst = emulator.installations(app.app_id)[0]
        base = {"redis_url": redis_url, "app_id": app.app_id, "pem": pem, "base_url": url}
        for n in workers:
            for shared, adaptive in ((False, False), (True, False), (True, True)):
                _flushall(redis_url)
                emulator.reset_stats()
                emulator.rate_limiter.limit = RateLimit(requests=rate, per=1.0)
                target = [inst["id"], f"/organizations/{inst['organization']['id']}"]
                results = _fleet(
                    n,
                    {
                        **base,
                        "mode": "hammer",
                        "target": target,
                        "seconds": seconds,
                        "shared": shared,
                        "adaptive": adaptive,
                    },
                )
                periods = emulator.rate_limiter.periods()
                emulator.rate_limiter.limit = None
                rows.append(
                    {
                        "workers": n,
                        "shared": shared,
                        "adaptive": adaptive,
                        "rate_limited": sum(periods),
                        "periods": len(periods),
                        "per_period": (sum(periods) / len(periods)) if periods else 0.0,
                        "max_per_period": max(periods, default=0),
                        "later_median": statistics.median(periods[1:]) if periods[1:] else 0,
                        "later_max": max(periods[1:], default=0),
                        "ok_per_s": sum(r["ok"] for r in results) / seconds,
                        "get_failed": sum(r["failed"] for r in results),
                    }
                )
                if adaptive:
                    continue  # idempotency does not depend on the back-off
                _flushall(redis_url)
                org = inst["organization"]["id"]
                credit = emulator.ledger.grant_credits(org, amount=orders * n)  # enough for all
                keyed = [[inst["id"], credit, f"{n}-{shared}-{k}"] for k in range(orders)]
                before = dict(emulator.ledger.executions)
                acted = _fleet(n, {**base, "mode": "actions", "orders": keyed, "shared": shared})
                new = {k: v - before.get(k, 0) for k, v in emulator.ledger.executions.items()}
                rows[-1].update(
                    {
                        "executions": sum(new.values()),
                        "duplicates": sum(v - 1 for v in new.values() if v > 1),
                        "refused": sum(r["refused"] for r in acted),
                        "action_failed": sum(r["failed"] for r in acted),
                        "redis_trips_per_action": (
                            sum(r["idem_commands"] for r in acted) / (n * orders)
                        ),
                    }
                )
    return rows


async def _warm_cost(redis_url: str, *, rounds: int, per_slice: int) -> dict[str, Any]:
    from icr_async.contrib.redis import RedisBackoffStore, RedisIdempotencyStore, RedisTokenCache

    with emulator_process(installations=4) as emu:
        pem = Path(emu.key_path).read_text()  # noqa: ASYNC240 - once, before timing
        cache = RedisTokenCache(redis_url, encryption_key=bytes.fromhex(KEY_HEX))
        backoff = RedisBackoffStore(cache)
        clients = {
            "off": AsyncICRClient(emu.app_id, pem, base_url=emu.url, env=False),
            "on": AsyncICRClient(
                emu.app_id,
                pem,
                base_url=emu.url,
                token_cache=cache,
                idempotency_store=RedisIdempotencyStore(cache),
                backoff=backoff,
                env=False,
            ),
            "null": AsyncICRClient(
                emu.app_id, pem, base_url=emu.url, backoff=NullBackoff(), env=False
            ),
        }
        try:
            first = clients["off"]
            inst = (await first.list_installations(limit=1)).items[0]
            path = f"/organizations/{inst.organization.id}" if inst.organization else "/projects"
            scoped = {name: c.installation(inst.id) for name, c in clients.items()}
            for s in scoped.values():  # warm: tokens, connections, the listener
                for _ in range(50):
                    await s.request("GET", path)
            cost: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(rounds):
                for name, s in scoped.items():
                    started = time.process_time()
                    for _ in range(per_slice):
                        await s.request("GET", path)
                    cost[name].append((time.process_time() - started) / per_slice)
        finally:
            for c in clients.values():
                await c.aclose()
            await backoff.aclose()
            await cache.aclose()
    on_off = ratio_stats(cost["on"], cost["off"])
    off_null = ratio_stats(cost["off"], cost["null"])
    return {
        "us_per_get": {k: statistics.median(v) * 1e6 for k, v in cost.items()},
        "on_vs_off": on_off,
        "off_vs_null": off_null,
    }


def run(
    workers: tuple[int, ...] = (1, 4, 8),
    *,
    seconds: float = 4.0,
    orders: int = 50,
    rate: int = 30,
    rounds: int = 20,
    per_slice: int = 1000,
) -> dict[str, Any]:
    """Run the three scenarios and print their tables."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("bench_fleet_actions needs a redis-server binary (apt-get install)")
    with redis_server(binary) as redis_url:
        rows = _fleet_scenarios(workers, redis_url, seconds=seconds, orders=orders, rate=rate)
        warm = asyncio.run(_warm_cost(redis_url, rounds=rounds, per_slice=per_slice))
    print(f"\n## Shared back-off: {rate} req/s limit, {seconds:g} s of hammering per row")
    print(
        table(
            [
                "workers",
                "back-off",
                "429s",
                "periods",
                "429s/period",
                "max",
                "after the 1st: median",
                "max",
                "ok/s",
                "failed GETs",
            ],
            [
                [
                    r["workers"],
                    "Redis, learned rate"
                    if r["adaptive"]
                    else ("Redis, pause only" if r["shared"] else "per request (today)"),
                    r["rate_limited"],
                    r["periods"],
                    f"{r['per_period']:.1f}",
                    r["max_per_period"],
                    f"{r['later_median']:g}",
                    r["later_max"],
                    f"{r['ok_per_s']:.1f}",
                    r["get_failed"],
                ]
                for r in rows
            ],
        )
    )
    rows = [r for r in rows if not r["adaptive"]]
    print(f"\n## Shared idempotency: every worker retries the same {orders} keyed retirements")
    print(
        table(
            [
                "workers",
                "store",
                "executions",
                "duplicates",
                "refused",
                "failed",
                "Redis trips/attempt",
            ],
            [
                [
                    r["workers"],
                    "Redis" if r["shared"] else "memory (default)",
                    r["executions"],
                    r["duplicates"],
                    r["refused"],
                    r["action_failed"],
                    f"{r['redis_trips_per_action']:.2f}",
                ]
                for r in rows
            ],
        )
    )
    print("\n## Warm GET, client CPU per request (median of interleaved slices)")
    print(
        table(
            ["contender", "µs/GET", "ratio"],
            [
                ["null back-off (floor)", f"{warm['us_per_get']['null']:.0f}", "1"],
                [
                    "defaults (off)",
                    f"{warm['us_per_get']['off']:.0f}",
                    fmt_ratio(warm["off_vs_null"]) + " vs null",
                ],
                [
                    "Redis stores (on)",
                    f"{warm['us_per_get']['on']:.0f}",
                    fmt_ratio(warm["on_vs_off"]) + " vs off",
                ],
            ],
        )
    )
    return {"fleet": rows, "warm": warm}


if __name__ == "__main__":
    run()
