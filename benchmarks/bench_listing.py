"""Listing every installation: ``iter_installations`` against a hand-written page loop (issue 14).

The emulator (its own process) serves ``installations`` installations (10,000 by default);
each contender lists them all in pages of 100, following ``pagination.nextPage``:

- ``aiohttp page loop`` (the baseline): aiohttp GET, ``json.loads``, each item decoded into
  the small dataclass a hand-written client keeps (``bench_steady.PlainInstallation``), and
  the next page taken from ``pagination.nextPage``;
- ``aiohttp page loop (null)``: the very same loop with its own session, timed as a separate
  contender; its ratio to the baseline is this table's noise floor;
- ``icr-async``: ``async for inst in client.iter_installations(page_size=100)`` (full models:
  datetimes parsed, permissions and organization typed, unknown keys kept).

One slice is one complete listing; rounds interleave the contenders (each round starting
with a different one), and the verdict is the median (min-max) of the paired per-round ratios
of client CPU per listing. Bounded by count (``rounds``, and a page cap per listing) and by
time (``budget_s`` for the whole run, ``slice_timeout`` per listing); a run cut short is kept
and marked partial.

Run it alone with ``python -m benchmarks.bench_listing [--installations N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from icr_async import AsyncICRClient

from ._harness import (
    NULL_SUFFIX,
    EmulatorProcess,
    emulator_process,
    fmt_ratio,
    interleave,
    pin,
    rounds_label,
    summarise,
    table,
)
from .bench_steady import SDK_TIMEOUTS, aiohttp_session, plain_installation, sign_jwt

BASELINE = "aiohttp page loop"
NULL = BASELINE + NULL_SUFFIX
PAGE_SIZE = 100


def hand_written_lister(
    session: aiohttp.ClientSession, base_url: str, app_jwt: str, *, max_pages: int
) -> Callable[[], Awaitable[int]]:
    """The page loop a hand-written client would write: follow ``nextPage`` until it is
    null or absent, or a page comes back empty; never more than ``max_pages`` pages."""
    headers = {
        "Accept": "application/json",
        "x-icr-api-version": "2023-06-16",
        "User-Agent": "hand-written/1.0",
        "Authorization": f"Bearer {app_jwt}",
    }
    url = f"{base_url}/app/installations"

    async def list_all() -> int:
        seen = 0
        page: Any = 0
        for _ in range(max_pages):
            params = {"limit": str(PAGE_SIZE), "page": str(page)}
            async with session.get(url, params=params, headers=headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"page {page}: HTTP {resp.status}")
            data = json.loads(body)
            items = [plain_installation(item) for item in data["installations"]]
            seen += len(items)
            page = (data.get("pagination") or {}).get("nextPage")
            if page is None or not items:
                return seen
        raise RuntimeError(f"still paging after {max_pages} pages")

    return list_all


async def _bench(
    server: EmulatorProcess,
    *,
    installations: int,
    rounds: int,
    budget_s: float,
    slice_timeout: float,
) -> dict[str, Any]:
    pin()  # the client on its own core(s), the server on another
    max_pages = installations // PAGE_SIZE + 3
    client = AsyncICRClient(
        server.app_id,
        private_key_path=server.key_path,
        base_url=server.url,
        timeouts=SDK_TIMEOUTS,
        env=False,
    )
    sessions = {BASELINE: aiohttp_session(8), NULL: aiohttp_session(8)}
    app_jwt = sign_jwt(server.app_id, server.key_path)

    async def sdk_list_all() -> int:
        seen = 0
        async for _inst in client.iter_installations(page_size=PAGE_SIZE):
            seen += 1
        return seen

    listers: dict[str, Callable[[], Awaitable[int]]] = {
        BASELINE: hand_written_lister(sessions[BASELINE], server.url, app_jwt, max_pages=max_pages),
        NULL: hand_written_lister(sessions[NULL], server.url, app_jwt, max_pages=max_pages),
        "icr-async": sdk_list_all,
    }
    counts: dict[str, int] = {}

    def one_listing(name: str) -> Callable[[], Awaitable[tuple[float, float, int]]]:
        async def timed() -> tuple[float, float, int]:
            c0, t0 = time.process_time(), time.perf_counter()
            seen = await listers[name]()
            cpu_s, wall_s = time.process_time() - c0, time.perf_counter() - t0
            if seen != installations:
                raise RuntimeError(f"{name} listed {seen} of {installations} installations")
            counts[name] = seen
            return cpu_s, wall_s, 1  # per listing

        return timed

    try:
        for name in listers:  # warm: connections, the app JWT, imports (bounded too)
            await asyncio.wait_for(one_listing(name)(), slice_timeout)
        series, status = await interleave(
            {name: one_listing(name) for name in listers},
            rounds=rounds,
            budget_s=budget_s,
            slice_timeout=slice_timeout,
        )
    finally:
        await client.aclose()
        for session in sessions.values():
            await session.close()
    return {
        "installations": installations,
        "page_size": PAGE_SIZE,
        "status": status.as_dict(),
        "listed": counts,
        "contenders": summarise(series, BASELINE),
    }


def run(
    *,
    installations: int = 10_000,
    rounds: int = 15,
    budget_s: float = 240.0,
    slice_timeout: float = 60.0,
) -> dict[str, Any]:
    """Run the listing comparison, print its table and return the numbers."""
    with emulator_process(installations=installations) as server:
        results = asyncio.run(
            _bench(
                server,
                installations=installations,
                rounds=rounds,
                budget_s=budget_s,
                slice_timeout=slice_timeout,
            )
        )
    rows = []
    for name, r in results["contenders"].items():
        rows.append(
            [
                name,
                f"{r['cpu_us'] / 1000:.0f}",
                f"{r['cpu_us'] / installations:.1f}",
                f"{r['wall_us'] / 1000:.0f}",
                fmt_ratio(r["cpu_ratio"]),
                fmt_ratio(r["wall_ratio"]),
                rounds_label(results["status"]),
            ]
        )
    print(
        f"\n### Listing {installations:,} installations in pages of {PAGE_SIZE} (client CPU per "
        f"listing; ratios to the hand-written {BASELINE}: median (min-max) of paired "
        f"interleaved rounds; the null row is the noise floor)\n"
    )
    print(
        table(
            [
                "contender",
                "CPU ms/listing",
                "CPU µs/item",
                "wall ms/listing",
                "CPU ratio",
                "wall ratio",
                "rounds",
            ],
            rows,
        )
    )
    return results


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m benchmarks.bench_listing``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--installations", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for all rounds")
    args = parser.parse_args(argv)
    run(installations=args.installations, rounds=args.rounds, budget_s=args.budget)


if __name__ == "__main__":
    main()
