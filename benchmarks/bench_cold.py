"""Cold storm and listing: single-flight minting from an empty cache, and iterating 10,000
installations through the SDK against a hand-written page loop."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp

from icr_async import AsyncICRClient

from ._harness import emulator_process, fmt_ratio, percentile, ratio_stats, table
from .bench_steady import plain_installation, sign_jwt


async def _admin(url: str, method: str, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.request(method, url + path) as resp:
        return await resp.json()


async def _cold(server: Any, *, calls: int, installations: int) -> dict[str, Any]:
    with open(server.key_path) as fh:  # noqa: ASYNC230  # once, before timing
        pem = fh.read()
    async with AsyncICRClient(
        server.app_id, pem, base_url=server.url, pool_size=256, env=False
    ) as lister:
        targets = [
            (i.id, i.organization.id)
            async for i in lister.iter_installations(page_size=100)
            if i.organization
        ]
    targets = targets[:installations]
    await _admin(server.url, "POST", "/_emulator/stats/reset")
    latencies: list[float] = []
    async with AsyncICRClient(
        server.app_id, pem, base_url=server.url, pool_size=256, env=False
    ) as client:
        scoped = [(client.installation(i), f"/organizations/{o}") for i, o in targets]

        async def call(n: int) -> None:
            inst, path = scoped[n % len(scoped)]
            t0 = time.perf_counter()
            await inst.request("GET", path)
            latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(call(n) for n in range(calls)))
        wall = time.perf_counter() - started
        client_mints = client.stats.total_mints
        waited = client.stats.waited
    server_stats = await _admin(server.url, "GET", "/_emulator/stats")
    return {
        "calls": calls,
        "installations": len(targets),
        "server_mints": server_stats["total_mints"],
        "client_mints": client_mints,
        "max_mints_per_installation": max(server_stats["mints"].values()),
        "waited_on_flight": waited,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "wall_s": wall,
    }


async def _listing(server: Any, *, rounds: int) -> dict[str, Any]:
    with open(server.key_path) as fh:  # noqa: ASYNC230
        pem = fh.read()
    app_jwt = sign_jwt(server.app_id, server.key_path)
    headers = {
        "Authorization": f"Bearer {app_jwt}",
        "x-icr-api-version": "2023-06-16",
        "Accept": "application/json",
    }
    async with (
        AsyncICRClient(server.app_id, pem, base_url=server.url, env=False) as client,
        aiohttp.ClientSession() as session,
    ):

        async def sdk() -> int:
            return sum([1 async for _ in client.iter_installations(page_size=100)])

        async def raw() -> int:
            count, page = 0, 0
            while True:  # bounded by the server's pageCount below
                async with session.get(
                    f"{server.url}/app/installations",
                    params={"limit": 100, "page": page},
                    headers=headers,
                ) as resp:
                    data = json.loads(await resp.read())
                count += len([plain_installation(item) for item in data["installations"]])
                nxt = data["pagination"].get("nextPage")
                if nxt is None or page >= data["pagination"]["pageCount"]:
                    return count
                page += 1

        sdk_cpu: list[float] = []
        raw_cpu: list[float] = []
        counts = set()
        for _ in range(rounds):
            for fn, sink in ((raw, raw_cpu), (sdk, sdk_cpu)):
                c0 = time.process_time()
                counts.add(await fn())
                sink.append(time.process_time() - c0)
    return {
        "items": sorted(counts),
        "sdk_cpu_ms": statistics.median(sdk_cpu) * 1e3,
        "raw_cpu_ms": statistics.median(raw_cpu) * 1e3,
        "ratio": ratio_stats(sdk_cpu, raw_cpu),
    }


def run(
    *, calls: int = 10_000, installations: int = 100, listing_rounds: int = 5
) -> dict[str, Any]:
    """Run the cold storm (100 installations) and the 10,000-installation listing."""
    with emulator_process(installations=installations) as server:
        cold = asyncio.run(_cold(server, calls=calls, installations=installations))
    with emulator_process(installations=10_000) as server:
        listing = asyncio.run(_listing(server, rounds=listing_rounds))
    print("\n### Cold storm (empty cache)\n")
    print(
        table(
            [
                "calls",
                "installations",
                "mints (server)",
                "max mints / installation",
                "callers that waited",
                "p50 ms",
                "p99 ms",
            ],
            [
                [
                    cold["calls"],
                    cold["installations"],
                    cold["server_mints"],
                    cold["max_mints_per_installation"],
                    cold["waited_on_flight"],
                    f"{cold['p50_ms']:.1f}",
                    f"{cold['p99_ms']:.1f}",
                ]
            ],
        )
    )
    print("\n### Listing 10,000 installations (pages of 100; client CPU)\n")
    print(
        table(
            ["items", "hand-written loop ms", "SDK iterator ms", "ratio"],
            [
                [
                    listing["items"],
                    f"{listing['raw_cpu_ms']:.0f}",
                    f"{listing['sdk_cpu_ms']:.0f}",
                    fmt_ratio(listing["ratio"]),
                ]
            ],
        )
    )
    return {"cold_storm": cold, "listing": listing}


if __name__ == "__main__":
    run()
