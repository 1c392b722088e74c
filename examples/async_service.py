"""An asyncio web service that uses one ``AsyncICRClient`` for its whole life.

``GET /orgs?limit=N`` lists the organizations that installed the app, each fetched with its
installation's token (minted once, cached and refreshed by the client).

    export ICR_APP_ID=... ICR_PRIVATE_KEY_PATH=... ICR_BASE_URL=...   # icr-async emulator prints these
    python examples/async_service.py              # serve on http://127.0.0.1:8000
    python examples/async_service.py --self-test  # start, call /orgs once, print, stop
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from icr_async import AsyncICRClient

ICR = web.AppKey("icr", AsyncICRClient)


async def icr_client(app: web.Application) -> AsyncIterator[None]:
    # One client (one connection pool, one token cache) for the whole service; credentials
    # come from ICR_APP_ID / ICR_PRIVATE_KEY_PATH / ICR_BASE_URL.
    async with AsyncICRClient() as client:
        app[ICR] = client
        yield


async def list_orgs(request: web.Request) -> web.Response:
    client = request.app[ICR]
    limit = int(request.query.get("limit", "5"))
    page = await client.list_installations(limit=limit)

    async def organization(installation_id: str) -> dict[str, str]:
        acting = client.installation(installation_id)
        org = await acting.request("GET", f"/organizations/{await acting.organization_id()}")
        return {"installation": installation_id, "name": org["fullName"]}

    orgs = await asyncio.gather(*(organization(inst.id) for inst in page))
    return web.json_response({"organizations": orgs})


def make_app() -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(icr_client)
    app.router.add_get("/orgs", list_orgs)
    return app


async def self_test() -> None:
    runner = web.AppRunner(make_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/orgs?limit=3") as resp,
        ):
            resp.raise_for_status()
            print(json.dumps(await resp.json(), indent=2))
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    if "--self-test" in sys.argv[1:]:
        asyncio.run(self_test())
    else:
        web.run_app(make_app(), host="127.0.0.1", port=8000)
