"""The emulator's /_emulator/ control routes, used by benchmarks across processes."""

from __future__ import annotations

import aiohttp
import pytest

from icr_async import AsyncICRClient, ServerError
from icr_async.testing import EmulatorServer, ICREmulator

pytestmark = pytest.mark.anyio


async def test_stats_faults_and_reset(
    client: AsyncICRClient, server: EmulatorServer, emulator: ICREmulator, app_id: str
) -> None:
    async with aiohttp.ClientSession() as admin:
        async with admin.post(
            server.url + "/_emulator/faults",
            json={"path": "/app/installations", "status": 500, "times": 1},
        ) as resp:
            assert resp.status == 201
        async with admin.post(server.url + "/_emulator/faults", json={"nonsense": True}) as resp:
            assert resp.status == 400
        with pytest.raises(ServerError):
            await client.list_installations()
        await client.installation(emulator.installations(app_id)[0]["id"]).get_token()
        async with admin.get(server.url + "/_emulator/stats") as resp:
            stats = await resp.json()
        assert stats["total_mints"] == 1
        assert stats["faults_fired"] == 1
        assert stats["total_requests"] == 2  # the control routes are not counted
        async with admin.delete(server.url + "/_emulator/faults") as resp:
            assert resp.status == 200
        assert len(emulator.faults) == 0
        async with admin.post(server.url + "/_emulator/stats/reset") as resp:
            assert resp.status == 200
        async with admin.get(server.url + "/_emulator/stats") as resp:
            assert (await resp.json())["total_mints"] == 0
