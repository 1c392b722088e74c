"""The emulator's /_emulator/ control routes, used by benchmarks across processes."""

from __future__ import annotations

import aiohttp
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from icr_async import AsyncICRClient, ServerError
from icr_async.testing import VARIANTS, EmulatorServer, ICREmulator
from icr_async.testing._variants import options_of

pytestmark = pytest.mark.anyio


async def test_stats_faults_and_reset(
    no_retry_client: AsyncICRClient, server: EmulatorServer, emulator: ICREmulator, app_id: str
) -> None:
    # No retries: the SDK repeats a GET that got a 500, and this test counts requests.
    client = no_retry_client
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


async def test_options_read_and_change_the_reading(
    server: EmulatorServer, emulator: ICREmulator, app_id: str, private_key_pem: str
) -> None:
    url = server.url + "/_emulator/options"
    async with aiohttp.ClientSession() as admin:
        async with admin.get(url) as resp:
            assert resp.status == 200
            assert await resp.json() == dict(VARIANTS["icr-docs"].kwargs())
        # A preset, then single options on top of it.
        async with admin.post(url, json={"variant": "one-based", "post_status": 201}) as resp:
            assert resp.status == 200
            options = await resp.json()
        assert options == {**VARIANTS["one-based"].kwargs(), "post_status": 201}
        assert (emulator.page_base, emulator.post_status) == (1, 201)
        # The running server follows at once: page=0 is read as the first of 1-based pages.
        jwt_token = _jwt(app_id, private_key_pem, emulator.server_now())
        async with admin.get(
            server.url + "/app/installations?limit=5&page=0",
            headers={"Authorization": f"Bearer {jwt_token}"},
        ) as resp:
            pagination = (await resp.json())["pagination"]
        assert pagination == {"total": 25, "currentPage": 1, "pageCount": 5, "nextPage": 2}
        # Bad input changes nothing, not even the valid part of it.
        for bad in (
            {"variant": "nope"},
            {"page_base": 2},
            {"post_status": 200, "request_id_header": "not a header"},
            {"colour": "blue"},
        ):
            async with admin.post(url, json=bad) as resp:
                assert resp.status == 400, bad
                assert (await resp.json())["statusCode"] == 400
        assert emulator.post_status == 201
        async with admin.post(url, json={"request_id_header": None}) as resp:
            # A control route keeps its own status whatever post_status (201) says.
            assert resp.status == 200
            assert (await resp.json())["request_id_header"] is None
            assert "x-icr-request-id" not in resp.headers
        assert emulator.request_id_header is None
        async with admin.post(url, json={"variant": "icr-docs"}) as resp:
            assert resp.status == 200
        assert options_of(emulator) == VARIANTS["icr-docs"].kwargs()


def _jwt(app_id: str, private_key_pem: str, now: float) -> str:
    claims = {"iss": app_id, "iat": int(now - 60), "exp": int(now + 540)}
    return jwt.encode({"alg": "RS256"}, claims, RSAKey.import_key(private_key_pem))
