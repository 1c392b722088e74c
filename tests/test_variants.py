"""The SDK's core flows against every plausible ICR.

shared/docs/icr-api.md leaves readings open (page base, the ends of a page list, 200 or 201
on POSTs, the server's clock, token lifetimes, the form of ``Retry-After``, the request-id
header). The emulator takes each as an option; here the ``emulator`` fixture is overridden
with one emulator per named variant in ``icr_async.testing.VARIANTS``, so every test below
runs against all of them and no reading can be baked into the SDK again.

Every count is what the emulator saw, never what the client believes.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cli_support import EmulatorThread

from icr_async import AsyncICRClient, NotFoundError, ResponseEvent
from icr_async.testing import VARIANTS, Fault, ICREmulator, ManualClock

pytestmark = pytest.mark.anyio


@pytest.fixture(params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    """The name of the plausible ICR under test."""
    name: str = request.param
    return name


@pytest.fixture
def emulator(clock: ManualClock, variant: str) -> ICREmulator:
    """Overrides conftest's: an emulator taking the variant's readings, on the shared clock."""
    return ICREmulator(clock=clock, seed=7, **VARIANTS[variant].kwargs())


async def test_iterating_yields_every_installation_once(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    expected = [inst["id"] for inst in emulator.installations(app_id)]
    assert len(expected) == 25
    seen = [inst.id async for inst in client.iter_installations(page_size=7)]
    assert seen == expected
    # 7 + 7 + 7 + 4, plus the one JWT a skewed server clock refuses before the client adapts.
    refused = sum(emulator.stats.jwt_rejections.values())
    assert emulator.stats.requests[("GET", "list_installations")] == 4 + refused


async def test_one_page_at_a_time_reports_what_the_server_said(
    client: AsyncICRClient, emulator: ICREmulator
) -> None:
    page = await client.list_installations(limit=7, page=0)
    assert len(page) == 7
    assert page.pagination is not None
    assert page.pagination.total == 25
    assert page.pagination.current_page == emulator.page_base
    assert page.pagination.next_page == emulator.page_base + 1


async def test_concurrent_calls_mint_once_per_installation(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    installations = emulator.installations(app_id)
    calls = [
        client.installation(inst["id"]).request(
            "GET", f"/organizations/{inst['organization']['id']}"
        )
        for inst in installations
        for _ in range(3)
    ]
    answers = await asyncio.gather(*calls)
    assert len(answers) == 75
    assert sum(emulator.stats.mints.values()) == 25
    assert client.stats.total_mints == 25


async def test_sequential_calls_reuse_one_token_for_its_useful_life(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, clock: ManualClock
) -> None:
    """200 calls over 50 s of time: one mint, whatever the server's token lifetime (2 h or
    2 min) and clock."""
    inst = emulator.installations(app_id)[0]
    scoped = client.installation(inst["id"])
    path = f"/organizations/{inst['organization']['id']}"
    for _ in range(200):
        await scoped.request("GET", path)
        clock.advance(0.25)
    assert emulator.stats.mints[inst["id"]] == 1


async def test_tokens_are_refreshed_before_they_expire(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, clock: ManualClock
) -> None:
    """Across two whole token lifetimes no request is ever refused for an expired token."""
    inst = emulator.installations(app_id)[1]
    scoped = client.installation(inst["id"])
    path = f"/organizations/{inst['organization']['id']}"
    ttl = emulator.installation_token_ttl
    for _ in range(20):
        await scoped.request("GET", path)
        clock.advance(ttl / 10)
    assert client.stats.recoveries_401 == 0
    assert emulator.stats.token_rejections["expired"] == 0
    assert 2 <= emulator.stats.mints[inst["id"]] <= 5


async def test_revoking_a_token(client: AsyncICRClient, emulator: ICREmulator, app_id: str) -> None:
    inst = emulator.installations(app_id)[2]
    scoped = client.installation(inst["id"])
    first = await scoped.get_token()
    assert await scoped.revoke() is True
    record = emulator.token_record(first.token)
    assert record is not None
    assert record.revoked
    second = await scoped.get_token()
    assert second.token != first.token
    assert await client.revoke_token(second) is True
    assert emulator.stats.mints[inst["id"]] == 2


async def test_a_429_waits_for_what_the_server_asked_on_its_own_clock(
    client: AsyncICRClient, emulator: ICREmulator, fake_sleep: Any
) -> None:
    emulator.faults.add(
        Fault(method="GET", path="/app/installations", status=429, retry_after=30, times=1)
    )
    page = await client.list_installations()
    assert len(page) == 10
    # Seconds or an HTTP date on a server clock 7 minutes off: the wait is what was asked.
    assert fake_sleep.calls == [pytest.approx(30, abs=1)]


async def test_errors_and_response_events_carry_the_servers_request_id(
    make_client: Any, emulator: ICREmulator
) -> None:
    events: list[ResponseEvent] = []
    client: AsyncICRClient = make_client(on_response=events.append)
    with pytest.raises(NotFoundError) as info:
        await client.get_installation("no-such-installation")
    ids = [event.request_id for event in events]
    if emulator.request_id_header is None:
        assert info.value.request_id is None
        assert ids == [None] * len(events)
    else:
        assert info.value.request_id
        assert info.value.request_id in str(info.value)
        assert ids[-1] == info.value.request_id
        assert len(set(ids)) == len(ids)  # one id per answer


async def test_the_app_jwt_is_accepted_whatever_the_servers_clock(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    installation = await client.get_installation(emulator.installations(app_id)[3]["id"])
    assert installation.id
    # At most one refusal, on a skewed clock, after which the client signs on server time.
    assert sum(emulator.stats.jwt_rejections.values()) <= 1
    assert client.jwt_signatures <= 2


# The export's page choice depends on the page base and the list's ends: the variants that
# change those (the others are covered by the SDK tests above).
@pytest.mark.parametrize("variant", ["icr-docs", "one-based", "everything-else"], indirect=True)
def test_cli_export_writes_every_installation(
    variant: str, private_key_pem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``icr-async installations export`` fetches pages concurrently: on every reading of
    the page numbers it must write each installation exactly once, in order."""
    from icr_async import cli

    with EmulatorThread(private_key_pem, tmp_path, installations=25) as emu:
        VARIANTS[variant].apply(emu.emulator)
        for name in [n for n in os.environ if n.startswith("ICR_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("ICR_APP_ID", emu.app.app_id)
        monkeypatch.setenv("ICR_PRIVATE_KEY_PATH", str(emu.key_path))
        monkeypatch.setenv("ICR_BASE_URL", emu.url)
        out = tmp_path / "all.jsonl"
        assert cli.main(["installations", "export", "--page-size", "7", "--out", str(out)]) == 0
        ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
        assert ids == emu.installation_ids


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["icr-docs", "everything-else"], indirect=True)
async def test_ten_thousand_calls_over_25_installations_mint_25(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, clock: ManualClock
) -> None:
    """The issue's figure, at full size (the default run proves it with 200 calls)."""
    installations = emulator.installations(app_id)
    scoped = [
        (client.installation(i["id"]), f"/organizations/{i['organization']['id']}")
        for i in installations
    ]
    for _ in range(40):  # 40 rounds x 25 installations x 10 calls = 10,000
        await asyncio.gather(*(c.request("GET", p) for c, p in scoped for _ in range(10)))
        clock.advance(1.0)  # 40 s in all: within half of even a 2-minute token's life
    assert sum(emulator.stats.requests.values()) >= 10_000
    assert sum(emulator.stats.mints.values()) == 25
