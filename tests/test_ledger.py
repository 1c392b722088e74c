"""The emulator's ledger and webhook delivery, driven over raw aiohttp and its Python API."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from icr_contract import shape_problems

from icr_async import AsyncICRClient, RetirementData
from icr_async.testing import EmulatorServer, ICREmulator
from icr_async.testing._ledger import certificate_pdf
from icr_async.webhooks import SIGNATURE_HEADER, parse_event

pytestmark = pytest.mark.anyio

SECRET = "whsec-test"


def _org_of(emulator: ICREmulator, app_id: str, index: int = 0) -> tuple[str, str]:
    installation = emulator.installations(app_id)[index]
    return installation["id"], installation["organization"]["id"]


async def _token(client: AsyncICRClient, installation_id: str) -> str:
    return (await client.installation(installation_id).get_token()).token


async def _call(
    server: EmulatorServer,
    method: str,
    path: str,
    token: str,
    json: Any = None,
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            server.url + path,
            json=json,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.read()


# -- seeding ------------------------------------------------------------------------------


def test_every_organization_is_seeded_deterministically(private_key_pem: str) -> None:
    def holdings(seed: int) -> list[dict[str, Decimal]]:
        emulator = ICREmulator(seed=seed)
        app = emulator.create_app(3, private_key_pem=private_key_pem)
        orgs = [i["organization"]["id"] for i in emulator.installations(app.app_id)]
        return [emulator.ledger.holdings(org) for org in orgs]

    first, again, other = holdings(1), holdings(1), holdings(2)
    assert first == again
    assert first != other
    assert all(len(h) == 2 and all(v > 0 for v in h.values()) for h in first)


def test_grant_credits_makes_new_batches_and_rejects_nonsense(private_key_pem: str) -> None:
    emulator = ICREmulator(seed=1)
    app = emulator.create_app(1, private_key_pem=private_key_pem)
    org = emulator.installations(app.app_id)[0]["organization"]["id"]
    credit = emulator.ledger.grant_credits(org, amount="2.5", project_name="Test Kelp")
    emulator.ledger.grant_credits(org, credit, 1)
    assert emulator.ledger.balance(org, credit) == Decimal("3.5")
    with pytest.raises(ValueError, match="positive"):
        emulator.ledger.grant_credits(org, credit, 0)
    with pytest.raises(KeyError):
        emulator.ledger.grant_credits("no-such-org", credit, 1)


def test_certificate_pdf_has_a_consistent_cross_reference_table() -> None:
    pdf = certificate_pdf({"id": "r-1", "beneficiary": "Ø (paren) \\ test", "amount": 3})
    assert pdf.startswith(b"%PDF-1.4\n")
    startxref = int(re.findall(rb"startxref\n(\d+)\n%%EOF", pdf)[-1])
    assert pdf[startxref:].startswith(b"xref\n0 6\n")
    offsets = [int(m) for m in re.findall(rb"(\d{10}) 00000 n ", pdf)]
    assert len(offsets) == 5
    for number, offset in enumerate(offsets, start=1):
        assert pdf[offset:].startswith(b"%d 0 obj" % number)
    assert b"\\(paren\\)" in pdf


# -- the HTTP surface ---------------------------------------------------------------------


async def test_validation_errors_are_nestjs_400s(
    client: AsyncICRClient, emulator: ICREmulator, server: EmulatorServer, app_id: str
) -> None:
    installation_id, org = _org_of(emulator, app_id)
    token = await _token(client, installation_id)
    status, body = await _call(
        server,
        "POST",
        f"/organizations/{org}/inventory/requests/transfer_retire",
        token,
        {"creditId": "", "amount": -1, "toOrganizationId": "x", "toAddress": "y"},
    )
    assert status == 400
    assert body["error"] == "Bad Request"
    assert "creditId must be a non-empty string" in body["message"]
    assert "amount must be a positive number" in body["message"]
    assert "only one of toOrganizationId and toAddress may be given" in body["message"]
    assert "retirementData must be an object" in body["message"]

    status, body = await _call(
        server, "POST", f"/organizations/{org}/inventory/requests/burn", token, {}
    )
    assert status == 404
    status, body = await _call(
        server, "POST", f"/organizations/{org}/warehouse/inventory/reservations/x/cancel", token, {}
    )
    assert status == 404
    status, body = await _call(
        server, "POST", f"/organizations/{org}/warehouse/inventory/reservations", token, {}
    )
    assert status == 400
    assert "organizationId must be a non-empty string" in body["message"]


async def test_tokens_of_other_organizations_and_app_tokens_are_refused(
    client: AsyncICRClient, emulator: ICREmulator, server: EmulatorServer, app_id: str
) -> None:
    installation_id, _ = _org_of(emulator, app_id, 0)
    _, other_org = _org_of(emulator, app_id, 1)
    token = await _token(client, installation_id)
    status, _ = await _call(server, "GET", f"/organizations/{other_org}/inventory", token)
    assert status == 403
    app_token = (await client.create_app_token()).token
    status, _ = await _call(server, "GET", f"/organizations/{other_org}/inventory", app_token)
    assert status == 403
    status, _ = await _call(server, "GET", f"/organizations/{other_org}/inventory", "crs_nope")
    assert status == 401


async def test_approval_fails_when_the_credits_are_gone(
    client: AsyncICRClient, emulator: ICREmulator, server: EmulatorServer, app_id: str
) -> None:
    _, org = _org_of(emulator, app_id)
    requester = emulator.add_installation(
        app_id,
        permissions={"organization_info": "VIEW", "organization_inventory": "REQUEST"},
        organization={"id": org},
    )
    writer = emulator.add_installation(app_id, organization={"id": org})
    credit = emulator.ledger.grant_credits(org, amount=5)
    pending = await client.installation(requester["id"]).retire_credits(
        credit_id=credit,
        amount=5,
        retirement_data=RetirementData(reason="Offsetting", beneficiary_name="Acme"),
    )
    await client.installation(writer["id"]).cancel_credits(credit_id=credit, amount=5)
    failed = emulator.ledger.approve_request(pending.id)
    assert (failed["state"], failed["txId"]) == ("Failed", None)
    assert "failureReason" not in failed  # not an ICR field: kept on the Python side
    reason = emulator.ledger.request_failure(pending.id)
    assert reason is not None
    assert "Insufficient credits" in reason
    with pytest.raises(ValueError, match="not pending"):
        emulator.ledger.approve_request(pending.id)
    with pytest.raises(KeyError):
        emulator.ledger.reject_request("nope")


async def test_a_finish_that_fails_keeps_the_hold(
    client: AsyncICRClient, emulator: ICREmulator, server: EmulatorServer, app_id: str
) -> None:
    installation_id, org = _org_of(emulator, app_id)
    token = await _token(client, installation_id)
    credit = emulator.ledger.grant_credits(org, amount=10)
    status, reservation = await _call(
        server,
        "POST",
        f"/organizations/{org}/warehouse/inventory/reservations",
        token,
        {"creditId": credit, "organizationId": org, "amount": 4},
    )
    assert status == emulator.post_status  # 200 as the docs' tables say, or a 201 variant
    base = f"/organizations/{org}/warehouse/inventory/reservations/{reservation['id']}"
    status, _ = await _call(server, "POST", f"{base}/transfer", token, {"receiverId": "ghost"})
    assert status == 404
    status, _ = await _call(server, "POST", f"{base}/transfer", token, {"receiverId": org})
    assert status == 400  # to itself
    assert emulator.ledger.reservation(reservation["id"])["isComplete"] is False
    assert emulator.ledger.reservation_status(reservation["id"]) == "active"
    assert emulator.ledger.available(org, credit) == 6


# -- webhook delivery ---------------------------------------------------------------------


@asynccontextmanager
async def receiver(
    respond: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None,
) -> AsyncIterator[tuple[str, list[tuple[bytes, str | None]]]]:
    """A loopback web app that records every POST it gets: yields (url, received)."""
    received: list[tuple[bytes, str | None]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        received.append((await request.read(), request.headers.get(SIGNATURE_HEADER)))
        if respond is not None:
            return await respond(request)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


def test_configure_accepts_loopback_urls_only() -> None:
    emulator = ICREmulator()
    for url in ("http://example.com/hook", "ftp://127.0.0.1/x", "http:///nohost"):
        with pytest.raises(ValueError, match=r"loopback|http"):
            emulator.webhooks.configure(url, SECRET)
    with pytest.raises(ValueError, match="empty"):
        emulator.webhooks.configure("http://127.0.0.1:9/x", "")
    emulator.webhooks.configure("http://localhost:9/x", SECRET)
    assert emulator.webhooks.configured
    emulator.webhooks.disable()
    assert not emulator.webhooks.configured


def test_an_emulator_not_served_records_instead_of_delivering(private_key_pem: str) -> None:
    emulator = ICREmulator()
    emulator.webhooks.configure("http://127.0.0.1:9/hook", SECRET)
    app = emulator.create_app(private_key_pem=private_key_pem)
    emulator.add_installation(app.app_id)
    (delivery,) = emulator.webhooks.deliveries
    assert delivery.event == "installed"
    assert delivery.done
    assert delivery.error is not None
    assert "not being served" in delivery.error


async def test_install_uninstall_and_transactions_are_delivered_signed(
    client: AsyncICRClient, emulator: ICREmulator, server: EmulatorServer, app_id: str
) -> None:
    async with receiver() as (url, received):
        emulator.webhooks.configure(url, SECRET)
        _, seller_org = _org_of(emulator, app_id, 0)
        created = emulator.add_installation(app_id)
        buyer_org = created["organization"]["id"]
        seller = client.installation(_org_of(emulator, app_id, 0)[0])
        credit = emulator.ledger.grant_credits(seller_org, amount=10)
        await seller.transfer_credits(credit_id=credit, amount=3, to_organization_id=buyer_org)
        emulator.remove_installation(created["id"])
        deliveries = await emulator.webhooks.drain(timeout=10)

    assert [d.event for d in deliveries] == [
        "installed",
        "organizationTransaction",  # the seller's installation
        "organizationTransaction",  # the buyer's
        "uninstalled",
    ]
    assert all(d.ok for d in deliveries)
    assert len(received) == 4
    events = [parse_event(body, signature=sig, secret=SECRET) for body, sig in received]
    assert all(e.verified for e in events)
    assert events[0].installation_id == created["id"]
    assert events[-1].installation_id == created["id"]
    transaction = events[1].transaction
    assert transaction is not None
    assert (transaction.action, transaction.amount) == ("transfer", 3)
    assert transaction.from_organization_id == seller_org
    # The credit is named as everywhere else: its type, serialization, token and project.
    (credit_json,) = [c for c in (await seller.get_inventory()).credits if c.id == credit]
    assert (transaction.type, transaction.serialization) == (
        credit_json.type,
        credit_json.serialization,
    )
    assert transaction.project is not None
    assert transaction.project.full_name == "Emulator Project"
    # The sender is a user, as ICR sends it, and the SDK reads it as one.
    for event, delivery in zip(events, deliveries, strict=True):
        assert shape_problems("User", delivery.payload["sender"]) == []
        assert event.sender is not None
        assert event.sender.email == delivery.payload["sender"]["email"]
        assert event.sender.url == delivery.payload["sender"]["url"]
    buyer_admin = events[0].sender
    assert buyer_admin is not None
    assert events[2].sender == buyer_admin  # the same organization's admin
    assert {e.installation.organization_id for e in events[1:3] if e.installation} == {
        seller_org,
        buyer_org,
    }
    assert deliveries[1].payload["transaction"]["creditId"] == credit


async def test_unsigned_and_legacy_deliveries(
    emulator: ICREmulator, server: EmulatorServer, app_id: str
) -> None:
    async with receiver() as (url, received):
        emulator.webhooks.configure(url, None)
        emulator.add_installation(app_id)
        emulator.webhooks.configure(url, SECRET, legacy_whole_body=True)
        emulator.add_installation(app_id)
        await emulator.webhooks.drain(timeout=10)
    (plain, no_sig), (legacy, sig) = received
    assert no_sig is None
    assert parse_event(plain, signature=None, secret=None).event == "installed"
    assert parse_event(legacy, signature=sig, secret=SECRET, legacy_whole_body=True).verified


async def test_app_filter_and_failures_are_recorded_not_raised(
    emulator: ICREmulator, server: EmulatorServer, app_id: str
) -> None:
    async def fail(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": False}, status=500)

    async with receiver(fail) as (url, received):
        emulator.webhooks.configure(url, SECRET, app_id="another-app")
        emulator.add_installation(app_id)
        emulator.webhooks.configure(url, SECRET, app_id=app_id)
        emulator.add_installation(app_id)
        (delivery,) = await emulator.webhooks.drain(timeout=10)
    assert delivery.status == 500
    assert not delivery.ok
    assert len(received) == 1

    # Nobody listens there any more: a connection error, recorded.
    emulator.add_installation(app_id)
    deliveries = await emulator.webhooks.drain(timeout=10)
    assert deliveries[-1].status is None
    assert deliveries[-1].error is not None


async def test_a_slow_app_times_out_and_never_blocks_a_request(
    client: AsyncICRClient, emulator: ICREmulator, server: EmulatorServer, app_id: str
) -> None:
    release = asyncio.Event()

    async def slow(_request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({"ok": True})

    async with receiver(slow) as (url, _):
        emulator.webhooks.configure(url, SECRET, timeout=0.2)
        created = await client.create_user_organization(
            email="a@example.com", organization_name="Slow Hooks", organization_type="other"
        )
        # The request came back while the delivery is still waiting for the app.
        assert created.installation.id
        (delivery,) = await emulator.webhooks.drain(timeout=10)
        release.set()
    assert delivery.error is not None
    assert "no answer within 0.2 s" in delivery.error


async def test_stopping_the_server_cancels_pending_deliveries(
    emulator: ICREmulator, app_id: str
) -> None:
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def hang(_request: web.Request) -> web.StreamResponse:
        arrived.set()
        await release.wait()
        return web.json_response({"ok": True})

    async with receiver(hang) as (url, _):
        async with emulator.serve():
            emulator.webhooks.configure(url, SECRET, timeout=30)
            emulator.add_installation(app_id)
            emulator.add_installation(app_id)
            # The first delivery reaches the app and hangs; the second waits in the queue.
            await asyncio.wait_for(arrived.wait(), 10)
        release.set()
    first, second = emulator.webhooks.deliveries
    assert first.done
    assert first.error == "the emulator stopped while delivering it"
    assert second.error == "the emulator stopped before delivering it"
