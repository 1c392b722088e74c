"""End to end: an app receives signed webhooks from the emulator and moves credits.

install → ``installed`` webhook delivered and verified → token minted → organization fetched
→ credits reserved and retired → ``warehouseTransaction`` webhook. Every wait is bounded by
``asyncio.wait_for`` or the emulator's ``drain(timeout=...)``; nothing sleeps.

The second test runs the Python block of the "A complete app" page (docs/complete-app.md,
between its complete-app markers) against the emulator, so the documentation cannot drift
from the SDK.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from icr_async import AsyncICRClient, ReservationAction, RetirementData
from icr_async.testing import ICREmulator
from icr_async.webhooks import EventType, WebhookEvent, webhook_handler

pytestmark = pytest.mark.anyio

SECRET = "whsec-e2e"
COMPLETE_APP_PAGE = Path(__file__).resolve().parent.parent / "docs" / "complete-app.md"
WAIT = 10.0  # seconds: generous bounds for loopback round trips on a slow CI machine


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve a user's aiohttp app on 127.0.0.1; yield its base URL."""
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_install_webhook_then_reserve_and_retire(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    events: asyncio.Queue[WebhookEvent] = asyncio.Queue()

    async def record(event: WebhookEvent) -> None:
        await events.put(event)

    app = web.Application()
    app.router.add_post("/webhooks/icr", webhook_handler(SECRET, on_event=record))
    async with serve(app) as url:
        emulator.webhooks.configure(url + "/webhooks/icr", SECRET, app_id=app_id)

        created = await client.create_user_organization(
            email="founder@example.com",
            organization_name="Kelp Cooperative",
            organization_type="projectDeveloper",
            country_code="IS",
        )
        installed = await asyncio.wait_for(events.get(), WAIT)
        assert installed.event == EventType.INSTALLED
        assert installed.verified
        assert installed.installation_id == created.installation.id
        # Trust, but confirm with the API (the docs' advice for install callbacks).
        confirmed = await client.get_installation(installed.installation_id)
        inst = client.installation(confirmed.id)

        mints = sum(emulator.stats.mints.values())
        token = await inst.get_token()
        assert sum(emulator.stats.mints.values()) == mints + 1
        organization = await inst.get_organization()
        assert organization.full_name == "Kelp Cooperative"
        assert token.organization_id == organization.id
        assert installed.installation is not None
        assert installed.installation.organization_id == organization.id

        warehouse = await inst.get_warehouse_inventory()
        credit = warehouse.credits[0]
        assert credit.amount is not None
        assert credit.amount > 5
        reservation = await inst.create_reservation(
            credit_id=credit.id, amount=5, idempotency_key="order-1:reserve"
        )
        retired = await inst.finish_reservation(
            reservation.id,
            ReservationAction.RETIRE,
            receiver_id=organization.id,
            retirement_data=RetirementData(reason="Order 1", beneficiary_name="A. Buyer"),
            idempotency_key="order-1:retire",
        )
        assert retired.is_complete

        transaction_event = await asyncio.wait_for(events.get(), WAIT)
        assert transaction_event.event == EventType.WAREHOUSE_TRANSACTION
        assert transaction_event.verified
        transaction = transaction_event.transaction
        assert transaction is not None
        assert transaction.reservation_id == reservation.id
        assert (transaction.action, transaction.amount) == ("retire", 5)
        assert credit.amount is not None
        assert emulator.ledger.balance(organization.id, credit.id) == credit.amount - 5

        retirement = (await inst.list_retirements())[-1]
        assert retirement.id == transaction.retirement_id
        assert (await inst.get_retirement_pdf(retirement.id)).startswith(b"%PDF-")
        deliveries = await emulator.webhooks.drain(timeout=WAIT)
    assert [d.event for d in deliveries] == ["installed", "warehouseTransaction"]
    assert all(d.status == 200 for d in deliveries)
    assert emulator.stats.duplicate_posts == 0


def _doc_code() -> str:
    text = COMPLETE_APP_PAGE.read_text(encoding="utf-8")
    section = text.split("<!-- complete-app:start -->", 1)[1].split("<!-- complete-app:end -->", 1)[
        0
    ]
    blocks = re.findall(r"^```python\n(.*?)^```$", section, re.M | re.S)
    assert len(blocks) == 1, "the complete-app section must hold exactly one python block"
    return str(blocks[0])


@pytest.fixture
async def live_emulator(private_key_pem: str) -> AsyncIterator[tuple[ICREmulator, str, str]]:
    """An emulator on the real clock (the documented app builds its client from the
    environment, with the system clock), served on loopback: (emulator, url, app id)."""
    emulator = ICREmulator(seed=11)
    app = emulator.create_app(2, private_key_pem=private_key_pem)
    async with emulator.serve() as server:
        yield emulator, server.url, app.app_id


async def test_the_documented_complete_app_runs(
    live_emulator: tuple[ICREmulator, str, str],
    private_key_pem: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator, base_url, app_id = live_emulator
    monkeypatch.setenv("ICR_APP_ID", app_id)
    monkeypatch.setenv("ICR_PRIVATE_KEY", private_key_pem)
    monkeypatch.setenv("ICR_BASE_URL", base_url)
    monkeypatch.delenv("ICR_PRIVATE_KEY_PATH", raising=False)
    monkeypatch.delenv("ICR_API_VERSION", raising=False)
    namespace: dict[str, Any] = {"__name__": "complete_app"}
    code = compile(_doc_code(), str(COMPLETE_APP_PAGE), "exec")
    exec(code, namespace)  # our own docs: trusted code

    shop = namespace["make_app"](SECRET)
    async with serve(shop) as url, aiohttp.ClientSession() as session:
        emulator.webhooks.configure(url + "/webhooks/icr", SECRET)
        async with AsyncICRClient(
            app_id, private_key_pem, base_url=base_url, env=False
        ) as operator:
            created = await operator.create_user_organization(
                email="owner@example.com",
                organization_name="Peat Trust",
                organization_type="other",
            )
        (installed,) = await emulator.webhooks.drain(timeout=WAIT)
        assert installed.status == 200
        installation_id = created.installation.id
        organizations = shop[namespace["ORGANIZATIONS"]]
        assert organizations[installation_id].full_name == "Peat Trust"

        org_id = organizations[installation_id].id
        credit_id = emulator.ledger.grant_credits(org_id, amount=50)
        order = {
            "installationId": installation_id,
            "creditId": credit_id,
            "amount": 20,
            "buyer": "A. Buyer",
            "orderId": "order-7",
        }
        async with session.post(url + "/orders", json=order) as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "completed"
        # The same order again: refused by the idempotency guard, nothing sent.
        posts = sum(emulator.stats.posts.values())
        async with session.post(url + "/orders", json=order) as resp:
            assert resp.status == 409
        assert sum(emulator.stats.posts.values()) == posts

        deliveries = await emulator.webhooks.drain(timeout=WAIT)
    assert [d.event for d in deliveries] == ["installed", "warehouseTransaction"]
    assert emulator.ledger.balance(org_id, credit_id) == 30
    assert emulator.ledger.retirements(org_id)[-1]["beneficiary"] == "A. Buyer"
    (transaction,) = shop[namespace["TRANSACTIONS"]]
    assert (transaction.action, transaction.amount) == ("retire", 20)
