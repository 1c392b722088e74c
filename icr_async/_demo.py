"""``icr-async demo``: the whole app flow against the embedded emulator, with a short report.

It needs no credentials and no network: a fresh RSA key is made, an emulator is started on
127.0.0.1 with that key's app and some installations, and the real client runs the flow.
"""

from __future__ import annotations

import asyncio
import time
from typing import TextIO

from ._redact import mask_token
from .client import AsyncICRClient


async def run_demo(
    *, installations: int = 50, concurrency: int = 10, page_size: int = 20, out: TextIO
) -> int:
    """Run the demo flow and write the report to ``out``; returns an exit status."""
    from .testing import ICREmulator

    def say(text: str = "") -> None:
        out.write(text + "\n")
        out.flush()

    started = time.perf_counter()
    emulator = ICREmulator(seed=2023)
    app = emulator.create_app(installations=installations)
    async with emulator.serve() as server:
        say(
            f"ICR emulator listening on {server.url} (app {app.app_id}, {installations} installations)"
        )
        async with AsyncICRClient(
            app.app_id, app.private_key_pem, base_url=server.url, env=False
        ) as client:
            say(f"key fingerprint      SHA256:{client.key_fingerprint}")

            app_token = await client.create_app_token()
            say(
                f"app access token     {mask_token(app_token.token)} expires {app_token.expires_at:%Y-%m-%d %H:%M:%S}Z"
            )

            pages_before = emulator.stats.requests[("GET", "list_installations")]
            listed = [inst async for inst in client.iter_installations(page_size=page_size)]
            pages = emulator.stats.requests[("GET", "list_installations")] - pages_before
            say(f"installations        {len(listed)} listed in {pages} pages of {page_size}")

            first = await client.get_installation(listed[0].id)
            org = first.organization
            say(
                f"one installation     {first.id} -> {org.full_name if org else '?'} "
                f"({org.country_code if org else '?'}, {org.type if org else '?'})"
            )
            say(
                f"  permissions        {', '.join(f'{k}={v}' for k, v in sorted(first.permissions.items()))}"
            )

            chosen = listed[:concurrency]
            scoped = [client.installation(inst.id) for inst in chosen]
            # Twenty callers per installation at once: the cache mints one token each.
            tokens = await asyncio.gather(*(s.get_token() for s in scoped for _ in range(20)))
            minted = sum(emulator.stats.mints[inst.id] for inst in chosen)
            say(
                f"installation tokens  {len(tokens)} requests for {len(chosen)} installations "
                f"-> {minted} mints (single flight)"
            )

            # Ids first: an `await` inside the generator below would make it an async
            # generator, which gather() cannot unpack.
            org_ids = await asyncio.gather(*(s.organization_id() for s in scoped))
            orgs = await asyncio.gather(
                *(
                    s.request("GET", f"/organizations/{oid}")
                    for s, oid in zip(scoped, org_ids, strict=True)
                )
            )
            say(
                f"organizations        fetched {len(orgs)} with installation tokens: {', '.join(o['fullName'] for o in orgs[:3])}, ..."
            )

            revoked = await scoped[0].revoke()
            say(
                f"revoke               token of {chosen[0].id}: {'revoked' if revoked else 'not revoked'}"
            )
            again = await scoped[0].get_token()
            say(f"  after revoke       a new token {mask_token(again.token)} was minted on demand")

            stats = client.stats
            say(
                f"client stats         {stats.total_mints} mints, {stats.cache_hits} cache hits, "
                f"{stats.waited} waited on a flight, {client.jwt_signatures} JWT signature(s)"
            )
            say(
                f"emulator saw         {emulator.stats.total_requests} requests, 0 JWT rejections"
                if not sum(emulator.stats.jwt_rejections.values())
                else f"emulator saw         {emulator.stats.total_requests} requests"
            )
    say(f"done in {time.perf_counter() - started:.2f} s")
    return 0
