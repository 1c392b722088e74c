"""Typed organization, inventory, warehouse and project endpoints against the emulator.

Balances are read from the emulator's ledger, requests counted by the emulator: a test only
passes if the server really saw (or did not see) what the client claims.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import pytest

from icr_async import (
    AsyncICRClient,
    AsyncInstallationClient,
    ConflictError,
    Credit,
    CreditAction,
    CreditRequest,
    CreditType,
    DuplicateActionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    Project,
    ProjectRef,
    ReservationAction,
    ResponseDecodeError,
    RetirementData,
    ServerError,
)
from icr_async._converters import structure
from icr_async.testing import Fault, ICREmulator, ManualClock

pytestmark = pytest.mark.anyio

RETIREMENT = RetirementData(reason="Offsetting 2024 flights", beneficiary_name="Acme Ltd")
ACTION_PATH = "/organizations/*/inventory/requests/*"


def _inst(emulator: ICREmulator, app_id: str, index: int = 0) -> tuple[str, str]:
    installation = emulator.installations(app_id)[index]
    return installation["id"], installation["organization"]["id"]


def _scoped(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, index: int = 0
) -> tuple[AsyncInstallationClient, str]:
    installation_id, org_id = _inst(emulator, app_id, index)
    return client.installation(installation_id), org_id


def _with_permissions(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, permissions: dict[str, str]
) -> tuple[AsyncInstallationClient, str]:
    created = emulator.add_installation(app_id, permissions=permissions)
    return client.installation(created["id"]), created["organization"]["id"]


def _posts(emulator: ICREmulator) -> int:
    return sum(emulator.stats.posts.values())


# -- the organization ---------------------------------------------------------------------


async def test_get_organization(client: AsyncICRClient, emulator: ICREmulator, app_id: str) -> None:
    inst, org_id = _scoped(client, emulator, app_id)
    org = await inst.get_organization()
    assert org.id == org_id
    assert org.full_name == emulator.organization(org_id)["fullName"]


async def test_addresses_and_retirements_are_seeded(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _scoped(client, emulator, app_id)
    addresses = await inst.list_addresses()
    assert [a.address for a in addresses] == [
        a["address"] for a in emulator.ledger.addresses(org_id)
    ]
    assert addresses[0].is_default is True
    retirements = await inst.list_retirements()
    assert len(retirements) == 1
    assert retirements[0].organization_id == org_id
    assert retirements[0].amount == 10


async def test_retirement_pdf_is_bytes_of_a_pdf(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, _ = _scoped(client, emulator, app_id)
    (retirement,) = await inst.list_retirements()
    pdf = await inst.get_retirement_pdf(retirement.id)
    assert isinstance(pdf, bytes)
    assert pdf.startswith(b"%PDF-1.4")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert retirement.id.encode() in pdf
    with pytest.raises(NotFoundError):
        await inst.get_retirement_pdf("no-such-retirement")


async def test_a_non_pdf_answer_is_a_decode_error(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, _ = _scoped(client, emulator, app_id)
    (retirement,) = await inst.list_retirements()
    emulator.faults.add(Fault(path="/organizations/*/retirements/*/pdf", action="nonjson"))
    with pytest.raises(ResponseDecodeError, match="expected a PDF"):
        await inst.get_retirement_pdf(retirement.id)


# -- inventory and credit requests --------------------------------------------------------


async def test_inventory_matches_the_ledger(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _scoped(client, emulator, app_id)
    inventory = await inst.get_inventory()
    assert inventory.organization_id == org_id
    holdings = emulator.ledger.holdings(org_id)
    assert len(holdings) == 2
    assert {c.id: c.amount for c in inventory.credits} == {k: int(v) for k, v in holdings.items()}
    credit = inventory.credits[0]
    assert credit.organization_id == org_id
    assert credit.type in (CreditType.EX_POST, CreditType.EX_ANTE)
    assert credit.id == f"{credit.type}-{credit.token_id}-{credit.token_address}"
    assert credit.serialization
    assert credit.supply is not None
    assert credit.amount is not None
    assert credit.supply >= credit.amount
    assert credit.project is not None
    assert credit.project.full_name
    assert inventory.credit(credit.id) == credit
    assert inventory.credit("missing") is None


async def test_transfer_moves_credits_to_the_other_organization(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _scoped(client, emulator, app_id, 0)
    _, other_id = _inst(emulator, app_id, 1)
    credit_id = emulator.ledger.grant_credits(org_id, amount=100)
    result = await inst.transfer_credits(
        credit_id=credit_id, amount=40, to_organization_id=other_id
    )
    assert isinstance(result, CreditRequest)
    assert result.action == CreditAction.TRANSFER
    assert result.state == "Completed"
    assert result.tx_id is not None
    assert (result.from_organization_id, result.to_organization_id) == (org_id, other_id)
    assert result.amount == 40
    assert result.type == CreditType.EX_POST  # the credit's type, not the action
    assert emulator.ledger.balance(org_id, credit_id) == 60
    assert emulator.ledger.balance(other_id, credit_id) == 40
    other = client.installation(_inst(emulator, app_id, 1)[0])
    other_inventory = await other.get_inventory()
    assert other_inventory.credit(credit_id) is not None


async def test_transfer_to_an_address(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _scoped(client, emulator, app_id, 0)
    _, other_id = _inst(emulator, app_id, 1)
    address = emulator.ledger.addresses(other_id)[0]["address"]
    credit_id = emulator.ledger.grant_credits(org_id, amount=Decimal("12.5"))
    await inst.create_credit_action(
        "transfer", credit_id=credit_id, amount=Decimal("2.5"), to_address=address
    )
    assert emulator.ledger.balance(org_id, credit_id) == 10
    assert emulator.ledger.balance(other_id, credit_id) == Decimal("2.5")


async def test_retire_burns_and_records_a_retirement(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _scoped(client, emulator, app_id)
    credit_id = emulator.ledger.grant_credits(org_id, amount=50)
    result = await inst.retire_credits(credit_id=credit_id, amount=20, retirement_data=RETIREMENT)
    assert (result.retirement_reason, result.beneficiary_name) == (
        "Offsetting 2024 flights",
        "Acme Ltd",
    )
    assert result.retirement_comment is None
    assert result.to_organization_id == org_id  # retired in its own name
    assert emulator.ledger.balance(org_id, credit_id) == 30
    retirements = await inst.list_retirements()
    newest = retirements[-1]
    assert (newest.serialization, newest.amount) == (result.serialization, 20)
    assert newest.project == result.project
    assert (newest.beneficiary, newest.reason) == ("Acme Ltd", "Offsetting 2024 flights")
    assert (await inst.get_retirement_pdf(newest.id)).startswith(b"%PDF-")


async def test_transfer_retire_retires_in_the_receivers_name(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _scoped(client, emulator, app_id, 0)
    _, other_id = _inst(emulator, app_id, 1)
    credit_id = emulator.ledger.grant_credits(org_id, amount=50)
    await inst.transfer_and_retire_credits(
        credit_id=credit_id,
        amount=5,
        to_organization_id=other_id,
        retirement_data=RetirementData(
            reason="Customer order", beneficiary_name="Buyer", comment="thanks"
        ),
    )
    assert emulator.ledger.balance(org_id, credit_id) == 45
    assert emulator.ledger.balance(other_id, credit_id) == 0
    retired = emulator.ledger.retirements(other_id)[-1]
    assert (retired["amount"], retired["comment"], retired["beneficiary"]) == (5, "thanks", "Buyer")
    assert retired["organizationId"] == other_id


async def test_cancel_burns_without_a_retirement(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _scoped(client, emulator, app_id)
    credit_id = emulator.ledger.grant_credits(org_id, amount=9)
    result = await inst.cancel_credits(credit_id=credit_id, amount=9)
    assert result.action == "cancel"
    assert emulator.ledger.balance(org_id, credit_id) == 0
    assert len(emulator.ledger.retirements(org_id)) == 1  # only the seeded one


async def test_overdraft_is_a_409_and_nothing_moves(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _scoped(client, emulator, app_id, 0)
    _, other_id = _inst(emulator, app_id, 1)
    credit_id = emulator.ledger.grant_credits(org_id, amount=10)
    with pytest.raises(ConflictError) as caught:
        await inst.transfer_credits(credit_id=credit_id, amount=11, to_organization_id=other_id)
    assert caught.value.status == 409
    assert "Insufficient credits" in caught.value.server_message
    assert emulator.ledger.balance(org_id, credit_id) == 10
    assert emulator.ledger.balance(other_id, credit_id) == 0
    with pytest.raises(NotFoundError):
        await inst.retire_credits(credit_id="unknown-credit", amount=1, retirement_data=RETIREMENT)
    with pytest.raises(NotFoundError):
        await inst.transfer_credits(credit_id=credit_id, amount=1, to_organization_id="no-such-org")


async def test_missing_permissions_are_403s(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _with_permissions(client, emulator, app_id, {"organization_info": "VIEW"})
    assert (await inst.get_organization()).id == org_id
    with pytest.raises(PermissionDeniedError, match="organization_inventory"):
        await inst.get_inventory()
    with pytest.raises(PermissionDeniedError, match="organization_warehouse"):
        await inst.get_warehouse_inventory()

    viewer, viewer_org = _with_permissions(
        client,
        emulator,
        app_id,
        {
            "organization_info": "VIEW",
            "organization_inventory": "VIEW",
            "organization_warehouse": "VIEW",
        },
    )
    credit_id = emulator.ledger.grant_credits(viewer_org, amount=10)
    assert (await viewer.get_inventory()).credit(credit_id) is not None
    with pytest.raises(PermissionDeniedError, match="organization_inventory:WRITE"):
        await viewer.retire_credits(credit_id=credit_id, amount=1, retirement_data=RETIREMENT)
    with pytest.raises(PermissionDeniedError, match="organization_warehouse:WRITE"):
        await viewer.create_reservation(credit_id=credit_id, amount=1)
    assert emulator.ledger.balance(viewer_org, credit_id) == 10


async def test_request_permission_creates_a_pending_request_until_approved(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _with_permissions(
        client,
        emulator,
        app_id,
        {"organization_info": "VIEW", "organization_inventory": "REQUEST"},
    )
    credit_id = emulator.ledger.grant_credits(org_id, amount=10)
    pending = await inst.retire_credits(credit_id=credit_id, amount=4, retirement_data=RETIREMENT)
    assert pending.is_pending
    assert pending.state == "Pending"  # the word ICR's demo compares with
    assert pending.tx_id is None
    assert emulator.ledger.balance(org_id, credit_id) == 10  # nothing moved yet
    # An impossible request fails at once, not on approval.
    with pytest.raises(ConflictError):
        await inst.retire_credits(credit_id=credit_id, amount=11, retirement_data=RETIREMENT)

    approved = emulator.ledger.approve_request(pending.id)
    assert approved["state"] == "Completed"
    assert emulator.ledger.balance(org_id, credit_id) == 6
    fetched = await inst.get_credit_request(pending.id)
    assert fetched.state == "Completed"
    assert fetched.tx_id == approved["txId"]
    assert fetched.tx_id is not None
    assert not fetched.is_pending

    second = await inst.cancel_credits(credit_id=credit_id, amount=1)
    assert emulator.ledger.reject_request(second.id)["state"] == "Rejected"
    rejected = await inst.get_credit_request(second.id)
    assert rejected.is_rejected
    assert rejected.tx_id is None
    assert emulator.ledger.balance(org_id, credit_id) == 6


async def test_credit_requests_page_by_page(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _scoped(client, emulator, app_id)
    credit_id = emulator.ledger.grant_credits(org_id, amount=1000)
    made = [
        (await inst.retire_credits(credit_id=credit_id, amount=n, retirement_data=RETIREMENT)).id
        for n in range(1, 8)
    ]
    first = await inst.list_credit_requests(limit=3, page=0)
    assert [r.id for r in first] == made[:3]
    assert first.total == 7
    last = await inst.list_credit_requests(limit=3, page=2)
    assert [r.id for r in last] == made[6:]
    seen = [r.id async for r in inst.iter_credit_requests(page_size=3)]
    assert seen == made
    one = await inst.get_credit_request(made[4])
    assert (one.amount, one.credit_id) == (5, credit_id)
    with pytest.raises(NotFoundError):
        await inst.get_credit_request("not-a-request")
    with pytest.raises(InvalidArgumentError):
        await inst.get_credit_request("../inventory")
    with pytest.raises(InvalidArgumentError):
        inst.iter_credit_requests(page_size=0)


# -- argument checks: before any request ---------------------------------------------------


@pytest.mark.parametrize(
    ("action", "kwargs", "match"),
    [
        ("burn", {}, "action must be one of"),
        ("transfer", {"amount": 0}, "amount must be positive"),
        ("transfer", {"amount": -1}, "amount must be positive"),
        ("transfer", {"amount": float("nan")}, "finite"),
        ("transfer", {"amount": True}, "positive number"),
        ("transfer", {"amount": "5"}, "positive number"),
        ("transfer", {"to_organization_id": None}, "needs a receiver"),
        ("transfer", {"to_address": "icr1abc"}, "not both"),
        ("transfer", {"retirement_data": RETIREMENT}, "no retirement_data"),
        ("transfer_retire", {}, "needs retirement_data"),
        ("retire", {"to_organization_id": None}, "needs retirement_data"),
        ("retire", {"retirement_data": {"reason": "x"}}, "must be a RetirementData"),
        (
            "retire",
            {"retirement_data": RetirementData(reason=" ", beneficiary_name="b")},
            "reason must not be empty",
        ),
        ("cancel", {"credit_id": ""}, "credit_id"),
        ("cancel", {"idempotency_key": ""}, "idempotency_key"),
    ],
)
async def test_bad_arguments_raise_before_any_request(
    client: AsyncICRClient,
    emulator: ICREmulator,
    app_id: str,
    action: str,
    kwargs: dict[str, Any],
    match: str,
) -> None:
    inst, _ = _scoped(client, emulator, app_id)
    arguments: dict[str, Any] = {
        "credit_id": "credit-1",
        "amount": 1,
        "to_organization_id": "org-2",
        **kwargs,
    }
    with pytest.raises(InvalidArgumentError, match=match):
        await inst.create_credit_action(action, **arguments)
    assert emulator.stats.total_requests == 0


# -- never repeated ------------------------------------------------------------------------


async def test_idempotency_key_refuses_a_second_send_without_a_request(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _scoped(client, emulator, app_id)
    credit_id = emulator.ledger.grant_credits(org_id, amount=100)
    await inst.retire_credits(
        credit_id=credit_id, amount=3, retirement_data=RETIREMENT, idempotency_key="order-17:retire"
    )
    requests_before = emulator.stats.total_requests
    with pytest.raises(DuplicateActionError) as caught:
        await inst.retire_credits(
            credit_id=credit_id,
            amount=3,
            retirement_data=RETIREMENT,
            idempotency_key="order-17:retire",
        )
    assert caught.value.key == "order-17:retire"
    assert "order-17:retire" in str(caught.value)
    assert "the same action" in str(caught.value)
    assert "Acme" not in str(caught.value)  # names the key, never the body
    # Another installation client of the same app client shares the registry.
    again = client.installation(inst.installation_id)
    with pytest.raises(DuplicateActionError, match=r"a different action \(retire\)"):
        await again.cancel_credits(credit_id=credit_id, amount=1, idempotency_key="order-17:retire")
    assert emulator.stats.total_requests == requests_before
    assert emulator.ledger.balance(org_id, credit_id) == 97

    assert await inst.forget_action("order-17:retire") is True
    assert await inst.forget_action("order-17:retire") is False
    await inst.retire_credits(
        credit_id=credit_id, amount=4, retirement_data=RETIREMENT, idempotency_key="order-17:retire"
    )
    assert emulator.ledger.balance(org_id, credit_id) == 93
    assert emulator.stats.duplicate_posts == 0


async def test_a_failed_send_still_spends_the_key(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _scoped(client, emulator, app_id)
    credit_id = emulator.ledger.grant_credits(org_id, amount=5)
    with pytest.raises(ConflictError):
        await inst.cancel_credits(credit_id=credit_id, amount=6, idempotency_key="k-1")
    with pytest.raises(DuplicateActionError):
        await inst.cancel_credits(credit_id=credit_id, amount=6, idempotency_key="k-1")
    assert _posts(emulator) == 1


async def test_the_registry_is_bounded(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    from icr_async._organizations import ActionRegistry

    registry = ActionRegistry(max_entries=3)
    for key in "abcd":
        registry.claim(key, "retire", "x")
    assert len(registry) == 3
    assert "a" not in registry
    registry.claim("a", "retire", "x")  # forgotten first, so usable again
    with pytest.raises(DuplicateActionError):
        registry.claim("d", "retire", "x")


async def test_a_credit_action_is_never_retried_on_503(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, fake_sleep: Any
) -> None:
    inst, org_id = _scoped(client, emulator, app_id, 0)
    _, other_id = _inst(emulator, app_id, 1)
    credit_id = emulator.ledger.grant_credits(org_id, amount=100)
    await inst.get_token()
    emulator.faults.add(Fault(method="POST", path=ACTION_PATH, status=503, times=None))
    with pytest.raises(ServerError) as caught:
        await inst.transfer_credits(credit_id=credit_id, amount=1, to_organization_id=other_id)
    assert caught.value.status == 503
    assert _posts(emulator) == 1
    assert emulator.stats.duplicate_posts == 0
    assert fake_sleep.calls == []
    assert emulator.ledger.balance(org_id, credit_id) == 100


async def test_reservation_writes_are_never_retried(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, fake_sleep: Any
) -> None:
    inst, org_id = _scoped(client, emulator, app_id)
    credit_id = emulator.ledger.grant_credits(org_id, amount=100)
    reservation = await inst.create_reservation(credit_id=credit_id, amount=10)
    fault = emulator.faults.add(
        Fault(
            method="*",
            path="/organizations/*/warehouse/inventory/reservations*",
            status=503,
            times=None,
        )
    )
    posts = _posts(emulator)
    with pytest.raises(ServerError):
        await inst.create_reservation(credit_id=credit_id, amount=1)
    with pytest.raises(ServerError):
        await inst.finish_reservation(
            reservation.id, "retire", receiver_id=org_id, retirement_data=RETIREMENT
        )
    with pytest.raises(ServerError):
        await inst.cancel_reservation(reservation.id)
    assert emulator.faults.fired(fault) == 3
    assert _posts(emulator) == posts + 2
    assert emulator.stats.duplicate_posts == 0
    assert fake_sleep.calls == []
    # A read is still retried: the policy is per method, not per client.
    emulator.faults.remove(fault)
    emulator.faults.add(
        Fault(method="GET", path="/organizations/*/warehouse/inventory", status=503)
    )
    assert (await inst.get_warehouse_inventory()).credit(credit_id) is not None
    assert len(fake_sleep.calls) == 1


# -- the warehouse -------------------------------------------------------------------------


async def test_reserve_then_retire(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, clock: ManualClock
) -> None:
    inst, org_id = _scoped(client, emulator, app_id, 0)
    _, buyer_id = _inst(emulator, app_id, 1)
    credit_id = emulator.ledger.grant_credits(org_id, amount=100)
    reservation = await inst.create_reservation(
        credit_id=credit_id, amount=30, idempotency_key="order-9:reserve"
    )
    assert reservation.is_complete is False
    assert reservation.credit_id == credit_id
    assert reservation.reserver is not None
    assert reservation.reserver.id == app_id
    assert reservation.reserved_to_date is not None
    assert reservation.created_at is not None
    assert reservation.reserved_to_date - reservation.created_at == datetime.timedelta(minutes=10)
    warehouse = await inst.get_warehouse_inventory()
    held = warehouse.credit(credit_id)
    assert held is not None
    assert (held.amount, held.organization_id) == (70, org_id)  # what may still be reserved
    assert held.inventory_id
    assert (await inst.get_inventory()).credit(credit_id) == Credit(
        id=credit_id,
        organization_id=org_id,
        token_id=reservation.token_id,
        token_address=reservation.token_address,
        amount=100,  # the balance, reservation included
        supply=100,
        serialization=reservation.serialization,
        type=reservation.type,
        project=reservation.project,
        vintage=2022,
        unit="tCO2e",
    )
    # Reserved credits cannot be spent twice.
    with pytest.raises(ConflictError):
        await inst.cancel_credits(credit_id=credit_id, amount=71)

    finished = await inst.finish_reservation(
        reservation.id,
        ReservationAction.RETIRE,
        receiver_id=buyer_id,
        retirement_data=RETIREMENT,
        idempotency_key="order-9:retire",
    )
    assert finished.is_complete is True
    assert finished.id == reservation.id
    assert emulator.ledger.reservation_status(reservation.id) == "completed"
    assert emulator.ledger.balance(org_id, credit_id) == 70
    assert emulator.ledger.available(org_id, credit_id) == 70
    assert (await inst.list_retirements())[-1].amount == 30
    assert (await inst.list_retirements())[-1].organization_id == org_id
    with pytest.raises(ConflictError, match="completed"):
        await inst.cancel_reservation(reservation.id)


async def test_reserve_then_transfer_and_transfer_retire(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _scoped(client, emulator, app_id, 0)
    _, buyer_id = _inst(emulator, app_id, 1)
    credit_id = emulator.ledger.grant_credits(org_id, amount=100)
    first = await inst.create_reservation(credit_id=credit_id, amount=10)
    await inst.finish_reservation(first.id, "transfer", receiver_id=buyer_id)
    second = await inst.create_reservation(credit_id=credit_id, amount=20)
    await inst.finish_reservation(
        second.id, "transfer_retire", receiver_id=buyer_id, retirement_data=RETIREMENT
    )
    assert emulator.ledger.balance(org_id, credit_id) == 70
    assert emulator.ledger.balance(buyer_id, credit_id) == 10
    assert emulator.ledger.retirements(buyer_id)[-1]["amount"] == 20
    with pytest.raises(InvalidArgumentError, match="needs retirement_data"):
        await inst.finish_reservation(second.id, "retire", receiver_id=buyer_id)
    with pytest.raises(InvalidArgumentError, match="action must be one of"):
        await inst.finish_reservation(second.id, "cancel", receiver_id=buyer_id)


async def test_cancel_releases_the_hold(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _scoped(client, emulator, app_id)
    credit_id = emulator.ledger.grant_credits(org_id, amount=10)
    reservation = await inst.create_reservation(credit_id=credit_id, amount=10)
    assert emulator.ledger.available(org_id, credit_id) == 0
    with pytest.raises(ConflictError):
        await inst.create_reservation(credit_id=credit_id, amount=1)
    cancelled = await inst.cancel_reservation(reservation.id)
    assert cancelled is not None
    assert (cancelled.id, cancelled.is_complete) == (reservation.id, False)
    assert emulator.ledger.reservation_status(reservation.id) == "cancelled"
    assert emulator.ledger.available(org_id, credit_id) == 10
    # A cancelled reservation is gone: not listed, not found.
    assert len(await inst.list_reservations()) == 0
    with pytest.raises(NotFoundError):
        await inst.cancel_reservation(reservation.id)
    with pytest.raises(NotFoundError):
        await inst.cancel_reservation("no-such-reservation")


async def test_reservation_lapses_after_ten_minutes(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, clock: ManualClock
) -> None:
    inst, org_id = _scoped(client, emulator, app_id)
    credit_id = emulator.ledger.grant_credits(org_id, amount=10)
    reservation = await inst.create_reservation(credit_id=credit_id, amount=8)
    clock.advance(599)
    assert emulator.ledger.available(org_id, credit_id) == 2
    clock.advance(2)
    assert emulator.ledger.available(org_id, credit_id) == 10
    with pytest.raises(ConflictError, match="expired"):
        await inst.finish_reservation(
            reservation.id, "retire", receiver_id=org_id, retirement_data=RETIREMENT
        )
    page = await inst.list_reservations()
    assert [(r.id, r.is_complete) for r in page] == [(reservation.id, False)]
    assert emulator.ledger.reservation_status(reservation.id) == "expired"
    assert emulator.ledger.balance(org_id, credit_id) == 10


async def test_reservations_page_by_page(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, org_id = _scoped(client, emulator, app_id)
    credit_id = emulator.ledger.grant_credits(org_id, amount=100)
    made = [(await inst.create_reservation(credit_id=credit_id, amount=n)).id for n in range(1, 6)]
    page = await inst.list_reservations(limit=2, page=1)
    assert [r.id for r in page] == made[2:4]
    assert page.total == 5
    assert [r.id async for r in inst.iter_reservations(page_size=2)] == made


async def test_reserving_another_organizations_credits_is_refused(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, _ = _scoped(client, emulator, app_id, 0)
    _, other_id = _inst(emulator, app_id, 1)
    credit_id = emulator.ledger.grant_credits(other_id, amount=10)
    with pytest.raises(PermissionDeniedError):
        await inst.create_reservation(credit_id=credit_id, amount=1, organization_id=other_id)
    with pytest.raises(InvalidArgumentError):
        await inst.create_reservation(credit_id=credit_id, amount=0)


# -- projects (app access token) ----------------------------------------------------------


async def test_projects_page_by_page(client: AsyncICRClient, emulator: ICREmulator) -> None:
    app = client.app_token_client()
    page = await app.list_projects(limit=10, page=2)
    assert len(page) == 5
    assert page.total == 25
    assert all(isinstance(p, Project) for p in page)
    projects = [p async for p in app.iter_projects(page_size=7)]
    assert len({p.id for p in projects}) == 25
    assert projects[0].name
    assert isinstance(projects[0].vintage_start, int)
    assert emulator.stats.app_token_mints == 1


# -- models stay tolerant -----------------------------------------------------------------


def test_models_keep_unknown_keys_and_values() -> None:
    credit = structure(
        {
            "id": 7,
            "amount": "2.5",
            "type": "exPostPlus",
            "tokenized": True,
            "vintage": "2021",
            "tokenId": 3,
            "project": {"id": "p", "fullName": "Kelp", "num": 354, "area": 9},
        },
        Credit,
    )
    assert (credit.id, credit.amount, credit.type, credit.vintage) == ("7", 2.5, "exPostPlus", 2021)
    assert credit.token_id == "3"
    assert credit.extra == {"tokenized": True}
    assert credit.project == ProjectRef(id="p", full_name="Kelp", num="354")
    assert credit.project.extra == {"area": 9}
    request = structure(
        {
            "id": "r",
            "action": "split",
            "state": "AwaitingKyc",
            "retirementData": {"reason": "r", "beneficiaryName": "b", "country": "IS"},
        },
        CreditRequest,
    )
    assert request.action == "split"
    assert not request.is_pending
    assert not request.is_rejected
    # The old nested shape is not ICR's: kept, not read.
    assert request.extra == {
        "retirementData": {"reason": "r", "beneficiaryName": "b", "country": "IS"}
    }
    assert structure({"id": "r", "state": "PENDING"}, CreditRequest).is_pending
    with pytest.raises(ResponseDecodeError, match="id"):
        structure({"amount": 1}, Credit)
    with pytest.raises(ResponseDecodeError, match="project"):
        structure({"id": "c", "project": {"fullName": "no id"}}, Credit)
    assert CreditAction("transfer_retire") is CreditAction.TRANSFER_RETIRE
    assert CreditAction.RETIRE.value == "retire"
    assert isinstance(CreditAction.RETIRE, str)
