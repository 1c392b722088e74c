"""Soak: 100,000 requests over 200 installations with 5 % injected faults.

Proves four things at once: every call either succeeds or raises a typed ``ICRError`` to its
caller (none lost, none hanging); no credit action is ever sent twice (the emulator records
every non-idempotent POST body, each body carries a unique reference); safe requests ride
out the faults through retries; and they fail about as often as chance says they must.

The last needs a yardstick. With a fault rate ``p`` per attempt and ``attempts`` tries, a safe
request fails only when every try meets a fault: ``p ** attempts``. That is the issue's
figure (printed as "p^attempts x GETs"). The exact model (printed as "expected") also counts
the one rule that makes a safe request give up early: a 2xx that is not JSON is tried once
more, not more, so two such answers end it.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from typing import Any

import aiohttp

from icr_async import AsyncICRClient, ICRError, RetryPolicy, Timeouts

from ._harness import emulator_process, table

ATTEMPTS = 4

FAULTS: list[dict[str, Any]] = [
    # Spread over GETs and credit-action POSTs alike; probabilities add up to ~5 %.
    {"path": "/organizations/*", "status": 503, "probability": 0.012, "times": None},
    {"path": "/organizations/*", "status": 502, "probability": 0.008, "times": None},
    {
        "path": "/organizations/*",
        "status": 429,
        "retry_after": "0",
        "probability": 0.008,
        "times": None,
    },
    {"path": "/organizations/*", "status": 500, "probability": 0.006, "times": None},
    {"path": "/organizations/*", "action": "reset", "probability": 0.006, "times": None},
    {"path": "/organizations/*", "action": "truncate", "probability": 0.005, "times": None},
    {"path": "/organizations/*", "action": "nonjson", "probability": 0.003, "times": None},
    {
        "path": "/organizations/*",
        "action": "delay",
        "delay": 0.05,
        "probability": 0.002,
        "times": None,
    },
]


async def _soak(
    server: Any,
    *,
    requests: int,
    installations: int,
    post_share: float,
    concurrency: int,
    call_timeout: float,
) -> dict[str, Any]:
    with open(server.key_path) as fh:  # noqa: ASYNC230  # once, before the run
        pem = fh.read()
    outcomes: collections.Counter[str] = collections.Counter()
    lost = 0
    retry = RetryPolicy(attempts=ATTEMPTS, backoff_base=0.05, backoff_cap=0.5)
    async with AsyncICRClient(
        server.app_id,
        pem,
        base_url=server.url,
        env=False,
        pool_size=concurrency,
        retry=retry,
        timeouts=Timeouts(connect=5, read=10, total=30),
    ) as client:
        targets = [
            (i.id, i.organization.id)
            async for i in client.iter_installations(page_size=100)
            if i.organization
        ]
        targets = targets[:installations]
        scoped = [(client.installation(i), o) for i, o in targets]
        # A real credit of each organization, read before any fault is planned.
        credits = []
        for inst, _ in scoped:
            inventory = await inst.get_inventory()
            credits.append(inventory.credits[0].id if inventory.credits else "none")
        async with aiohttp.ClientSession() as admin:
            for fault in FAULTS:
                async with admin.post(server.url + "/_emulator/faults", json=fault) as resp:
                    assert resp.status == 201, await resp.text()
            async with admin.post(server.url + "/_emulator/stats/reset") as resp:
                assert resp.status == 200
        post_every = max(1, round(1 / post_share)) if post_share > 0 else 0
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(requests):
            queue.put_nowait(n)

        async def one(n: int) -> str:
            inst, org = scoped[n % len(scoped)]
            if post_every and n % post_every == 0:
                body = {
                    "creditId": credits[n % len(scoped)],
                    "amount": 1,
                    "toOrganizationId": scoped[(n + 1) % len(scoped)][1],
                    "reference": str(uuid.uuid4()),
                }
                await inst.request(
                    "POST", f"/organizations/{org}/inventory/requests/transfer", json=body
                )
                return "post ok"
            await inst.request("GET", f"/organizations/{org}")
            return "get ok"

        async def worker() -> None:
            nonlocal lost
            while True:
                try:
                    n = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    outcomes[await asyncio.wait_for(one(n), call_timeout)] += 1
                except asyncio.TimeoutError:
                    lost += 1  # a call that hung past its bound: must stay zero
                except ICRError as exc:
                    outcomes[
                        f"{'post' if post_every and n % post_every == 0 else 'get'} {type(exc).__name__}"
                    ] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        retries = client.stats.retries
        mints = client.stats.total_mints
    async with aiohttp.ClientSession() as admin, admin.get(server.url + "/_emulator/stats") as resp:
        server_stats = await resp.json()
    accounted = sum(outcomes.values()) + lost
    gets = sum(v for k, v in outcomes.items() if k.startswith("get "))
    posts = sum(v for k, v in outcomes.items() if k.startswith("post "))
    failed_gets = gets - outcomes["get ok"]
    failed_posts = posts - outcomes["post ok"]
    return {
        "requests": requests,
        "gets": gets,
        "posts": posts,
        "failed_safe": failed_gets,
        "failed_unsafe": failed_posts,
        "fault_rate": fault_rate(),
        "naive_expected_safe_failures": gets * fault_rate() ** ATTEMPTS,
        "expected_safe_failures": gets * safe_failure_probability(ATTEMPTS),
        "accounted": accounted,
        "lost": requests - accounted,
        "hung": lost,
        "outcomes": dict(outcomes),
        "retries": retries,
        "mints": mints,
        "faults_fired": server_stats["faults_fired"],
        "posts_received": server_stats["posts"],
        "duplicate_posts": server_stats["duplicate_posts"],
        "wall_s": wall,
    }


def _fault_chances() -> tuple[float, float]:
    """Per-attempt chances that an attempt meets a retried fault and a non-JSON 2xx.

    The emulator tries the planned faults in order, each with its own probability, and the
    first that fires answers; a ``delay`` fault is no failure.
    """
    retried = nonjson = 0.0
    untouched = 1.0
    for fault in FAULTS:
        chance = untouched * fault["probability"]
        if fault.get("action") == "nonjson":
            nonjson += chance
        elif fault.get("action") != "delay":
            retried += chance
        untouched -= chance
    return retried, nonjson


def fault_rate() -> float:
    """The chance that one attempt meets a fault that fails it."""
    retried, nonjson = _fault_chances()
    return retried + nonjson


def safe_failure_probability(attempts: int) -> float:
    """The chance that a safe request fails under the retry rules (exact, by enumeration)."""
    retried, nonjson = _fault_chances()

    def fail(left: int, nonjson_seen: bool) -> float:
        # The chance that the remaining ``left`` attempts all fail.
        if left == 0:
            return 1.0
        again = retried * fail(left - 1, nonjson_seen)
        if nonjson_seen:
            return again + nonjson  # a second non-JSON 2xx is not tried again
        return again + nonjson * fail(left - 1, True)

    return fail(attempts, False)


async def _fanout(server: Any, *, coroutines: int, pool_size: int) -> dict[str, Any]:
    """Back-pressure: ``coroutines`` requests gathered at once on a small pool must all queue
    and complete (no pool timeouts), with one token mint."""
    with open(server.key_path) as fh:  # noqa: ASYNC230  # once, before the run
        pem = fh.read()
    async with (
        aiohttp.ClientSession() as admin,
        admin.delete(server.url + "/_emulator/faults") as resp,
    ):
        assert resp.status == 200  # no injected faults here: this measures queueing alone
    async with AsyncICRClient(
        server.app_id, pem, base_url=server.url, env=False, pool_size=pool_size
    ) as client:
        first = (await client.list_installations(limit=1)).items[0]
        assert first.organization is not None
        scoped = client.installation(first.id)
        path = f"/organizations/{first.organization.id}"
        started = time.perf_counter()
        results = await asyncio.gather(
            *(scoped.request("GET", path) for _ in range(coroutines)), return_exceptions=True
        )
        wall = time.perf_counter() - started
        errors = collections.Counter(
            type(r).__name__ for r in results if isinstance(r, BaseException)
        )
        return {
            "coroutines": coroutines,
            "pool_size": pool_size,
            "completed": coroutines - sum(errors.values()),
            "errors": dict(errors),
            "mints": client.stats.total_mints,
            "wall_s": wall,
        }


def run(
    *,
    requests: int = 100_000,
    installations: int = 200,
    post_share: float = 0.1,
    concurrency: int = 128,
) -> dict[str, Any]:
    """Run the soak and print its counts."""
    with emulator_process(installations=installations) as server:
        result = asyncio.run(
            _soak(
                server,
                requests=requests,
                installations=installations,
                post_share=post_share,
                concurrency=concurrency,
                call_timeout=60.0,
            )
        )
        fanout = asyncio.run(_fanout(server, coroutines=requests, pool_size=32))
    result["fanout"] = fanout
    print(
        f"\n### Soak: {requests:,} requests, {installations} installations, ~5 % injected faults\n"
    )
    print(
        table(
            [
                "requests",
                "accounted for",
                "lost",
                "hung",
                "faults fired",
                "retries",
                "credit-action POSTs received",
                "duplicate POSTs",
                "mints",
                "wall s",
            ],
            [
                [
                    result["requests"],
                    result["accounted"],
                    result["lost"],
                    result["hung"],
                    result["faults_fired"],
                    result["retries"],
                    result["posts_received"],
                    result["duplicate_posts"],
                    result["mints"],
                    f"{result['wall_s']:.0f}",
                ]
            ],
        )
    )
    print("\noutcomes: " + ", ".join(f"{k}: {v}" for k, v in sorted(result["outcomes"].items())))
    print(
        f"\n### Failed requests, safe and unsafe ({ATTEMPTS} attempts, "
        f"{result['fault_rate']:.2%} faults per attempt)\n"
    )
    print(
        table(
            [
                "safe requests (GET)",
                "failed",
                "expected",
                "p^attempts x GETs",
                "unsafe (credit actions)",
                "failed (never retried)",
            ],
            [
                [
                    result["gets"],
                    result["failed_safe"],
                    f"{result['expected_safe_failures']:.2f}",
                    f"{result['naive_expected_safe_failures']:.2f}",
                    result["posts"],
                    result["failed_unsafe"],
                ]
            ],
        )
    )
    print(
        f"\n### Back-pressure: {fanout['coroutines']:,} coroutines gathered at once"
        f" on a pool of {fanout['pool_size']}\n"
    )
    print(
        table(
            ["coroutines", "completed", "errors", "mints", "wall s"],
            [
                [
                    fanout["coroutines"],
                    fanout["completed"],
                    sum(fanout["errors"].values()),
                    fanout["mints"],
                    f"{fanout['wall_s']:.0f}",
                ]
            ],
        )
    )
    return result


if __name__ == "__main__":
    run()
