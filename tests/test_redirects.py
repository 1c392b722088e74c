"""Redirects are never followed: a 3xx is a typed error naming where it pointed.

A small aiohttp server on 127.0.0.1 stands for a misconfigured gateway: it mints tokens like
ICR and answers everything else with a redirect. A second one stands for the host the
redirect points at and records what reaches it. The emulator cannot answer a redirect, and
no mocking is involved: the SDK's own transport talks to both servers.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from icr_async import AsyncICRClient, RedirectError

pytestmark = pytest.mark.anyio


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


class _Servers:
    def __init__(self) -> None:
        self.status = 307
        self.target_url = ""
        self.target_hits: list[tuple[str, str, bytes]] = []

    async def target(self, request: web.Request) -> web.Response:
        self.target_hits.append((request.method, request.path, await request.read()))
        return web.json_response({"foreign": True})

    async def gateway(self, request: web.Request) -> web.Response:
        if request.method == "POST" and request.path.endswith("/accessTokens"):
            expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2)
            return web.json_response(
                {
                    "token": "crs_" + "ab" * 24,
                    "expiresAt": expires.isoformat().replace("+00:00", "Z"),
                    "installationId": "inst-1",
                    "organizationId": "org-1",
                }
            )
        return web.Response(
            status=self.status, headers={"Location": self.target_url + request.path}
        )


@pytest.fixture
async def servers() -> AsyncIterator[tuple[_Servers, str]]:
    state = _Servers()
    target = web.Application()
    target.router.add_route("*", "/{tail:.*}", state.target)
    gateway = web.Application()
    gateway.router.add_route("*", "/{tail:.*}", state.gateway)
    target_runner, state.target_url = await _serve(target)
    gateway_runner, gateway_url = await _serve(gateway)
    try:
        yield state, gateway_url
    finally:
        await gateway_runner.cleanup()
        await target_runner.cleanup()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_credit_action_is_not_resent_to_where_a_redirect_points(
    servers: tuple[_Servers, str], private_key_pem: str, status: int
) -> None:
    state, gateway_url = servers
    state.status = status
    path = "/organizations/org-1/inventory/requests/retire"
    async with AsyncICRClient("app", private_key_pem, base_url=gateway_url, env=False) as client:
        with pytest.raises(RedirectError) as info:
            await client.installation("inst-1").request(
                "POST", path, json={"creditId": "c", "amount": 1}, retry=True
            )
        assert client.stats.retries == 0
    assert state.target_hits == []  # the body never reached the other host
    assert info.value.status == status
    assert info.value.location == state.target_url + path
    assert "never follows redirects" in str(info.value)
    assert info.value.method == "POST"


async def test_a_redirected_get_is_neither_followed_nor_retried(
    servers: tuple[_Servers, str], private_key_pem: str
) -> None:
    state, gateway_url = servers
    async with AsyncICRClient("app", private_key_pem, base_url=gateway_url, env=False) as client:
        with pytest.raises(RedirectError) as info:
            await client.list_installations()
        assert client.stats.requests == 1
    assert info.value.location == state.target_url + "/app/installations"
    assert state.target_hits == []
