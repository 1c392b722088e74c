"""A fan-out job: every installation's organization, fetched concurrently.

The client mints one token per installation however many tasks ask for it, and reuses one
connection pool; a semaphore keeps at most ``CONCURRENCY`` requests in flight.

    export ICR_APP_ID=... ICR_PRIVATE_KEY_PATH=... ICR_BASE_URL=...   # icr-async emulator prints these
    python examples/fetch_all.py
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from icr_async import AsyncICRClient, ICRError

CONCURRENCY = 20


async def main() -> None:
    started = time.perf_counter()
    limit = asyncio.Semaphore(CONCURRENCY)
    async with AsyncICRClient() as client:  # ICR_APP_ID / ICR_PRIVATE_KEY_PATH / ICR_BASE_URL

        async def organization(installation_id: str) -> dict[str, Any] | None:
            async with limit:
                acting = client.installation(installation_id)
                try:
                    org_id = await acting.organization_id()
                    result: dict[str, Any] = await acting.request("GET", f"/organizations/{org_id}")
                except ICRError as exc:  # one failing installation must not sink the job
                    print(f"  skipped {installation_id}: {exc}")
                    return None
                return result

        ids = [inst.id async for inst in client.iter_installations()]
        orgs = [org for org in await asyncio.gather(*map(organization, ids)) if org]
        countries = collections.Counter(org["countryCode"] for org in orgs)
        print(f"fetched {len(orgs)} organizations from {len(ids)} installations")
        print("by country: " + ", ".join(f"{c} {n}" for c, n in countries.most_common()))
        print(
            f"{client.stats.total_mints} tokens minted, {client.stats.requests} requests, "
            f"{time.perf_counter() - started:.2f} s"
        )


if __name__ == "__main__":
    asyncio.run(main())
