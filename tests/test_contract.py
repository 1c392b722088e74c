"""The emulator and the SDK against ICR's documented contract (``tests/icr_contract.py``).

(a) The emulator's real HTTP answers, on 127.0.0.1, carry exactly the documented fields with
    the documented JSON types, for every documented endpoint.
(b) Every documented field of every object maps to an attribute of the SDK's model
    (camelCase → snake_case), decodes from an ICR-shaped sample, and is ``None`` when an
    optional field is missing.
(c) Every path the SDK calls for the organization endpoints is a documented one, and every
    documented organization endpoint is reachable through the SDK.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from icr_contract import (
    ARRAY,
    BOOLEAN,
    BOOLEAN_BODY,
    DATETIME,
    ENDPOINTS,
    NULL,
    NUMBER,
    OBJECT,
    OBJECTS,
    ORGANIZATION_ENDPOINTS,
    PDF,
    STRING,
    Endpoint,
    Field,
    match_endpoint,
    shape_problems,
)

from icr_async import (
    AsyncAppTokenClient,
    AsyncICRClient,
    AsyncInstallationClient,
    CreatedOrganization,
    Credit,
    CreditRequest,
    Installation,
    InvalidArgumentError,
    Inventory,
    NotFoundError,
    Organization,
    Pagination,
    ProjectRef,
    RequestEvent,
    Reservation,
    Reserver,
    Retirement,
    RetirementData,
    User,
    WarehouseCredit,
    WarehouseInventory,
)
from icr_async._converters import structure
from icr_async._organizations import OrganizationEndpoints
from icr_async._token_answer import AccessTokenAnswer
from icr_async.testing import VARIANTS, ICREmulator

pytestmark = pytest.mark.anyio

RETIREMENT = RetirementData(reason="Offsetting", beneficiary_name="Acme Ltd", comment="thanks")

MODELS: dict[str, type[Any]] = {
    # ICR's wire shape, read by the private model behind every ``Token``.
    "AccessToken": AccessTokenAnswer,
    "InstallationAccessToken": AccessTokenAnswer,
    "Installation": Installation,
    "Organization": Organization,
    "Pagination": Pagination,
    "CreatedOrganization": CreatedOrganization,
    "ProjectRef": ProjectRef,
    "CreditProject": ProjectRef,
    "Credit": Credit,
    "WarehouseCredit": WarehouseCredit,
    "Inventory": Inventory,
    "WarehouseInventory": WarehouseInventory,
    "Retirement": Retirement,
    "Reserver": Reserver,
    "Reservation": Reservation,
    "CreditRequest": CreditRequest,
    "User": User,
}
"""The SDK model each documented object decodes into."""

LISTS = frozenset({"InstallationPage", "RetirementList", "ReservationList", "CreditRequestPage"})
"""List answers: the SDK reads them as a ``Page`` / tuple of the item model, not a model."""


def snake(name: str) -> str:
    """``camelCase`` → ``snake_case``."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


# ------------------------------------------------------------------ (a) emulator answers


class Recorder:
    """An ``on_request`` hook: every (method, path) the client sends."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, event: RequestEvent) -> None:
        self.calls.append((event.method, event.path.split("?", 1)[0]))


def _check(answers: dict[Endpoint, list[Any]], endpoint: Endpoint, body: Any) -> None:
    answers.setdefault(endpoint, []).append(body)
    if endpoint.response is None:
        return
    if endpoint.response == BOOLEAN_BODY:
        assert isinstance(body, bool), (endpoint, body)
    elif endpoint.response == PDF:
        assert isinstance(body, bytes)
        assert body.startswith(b"%PDF-"), endpoint
    else:
        assert shape_problems(endpoint.response, body) == [], endpoint


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_every_documented_endpoint_answers_the_documented_shape(
    make_client: Callable[..., AsyncICRClient], emulator: ICREmulator, app_id: str, variant: str
) -> None:
    # Every plausible ICR the emulator can be answers in ICR's shapes.
    VARIANTS[variant].apply(emulator)
    recorder = Recorder()
    client = make_client(on_request=recorder)
    answers: dict[Endpoint, list[Any]] = {}

    async def call(
        scope: AsyncICRClient | AsyncInstallationClient | AsyncAppTokenClient,
        method: str,
        path: str,
        **kwargs: Any,
    ) -> Any:
        endpoint = match_endpoint(method, path)
        assert endpoint is not None, (method, path)
        if endpoint.response == PDF:
            assert isinstance(scope, AsyncInstallationClient)
            body: Any = await scope.request_raw(method, path, **kwargs)
        else:
            body = await scope.request(method, path, **kwargs)
        _check(answers, endpoint, body)
        return body

    installations = emulator.installations(app_id)
    seller_id, org = installations[0]["id"], installations[0]["organization"]["id"]
    buyer_org = installations[1]["organization"]["id"]
    inst = client.installation(seller_id)
    base = f"/organizations/{org}"
    credit = emulator.ledger.grant_credits(org, amount=100)

    await call(client, "POST", "/app/accessTokens")
    await call(client, "POST", f"/app/installations/{seller_id}/accessTokens", json={})
    await call(client, "GET", "/app/installations", params={"limit": 10, "page": 0})
    await call(client, "GET", f"/app/installations/{seller_id}")
    await call(
        client,
        "POST",
        "/app/create/user/organization",
        json={
            "user": {"email": "owner@example.com", "fullName": "O. Wner"},
            "organization": {"fullName": "Contract Kelp", "type": "other"},
        },
    )
    await call(inst, "GET", base)
    await call(inst, "GET", f"{base}/addresses")
    await call(inst, "GET", f"{base}/inventory")
    await call(inst, "GET", f"{base}/warehouse/inventory")
    for action, extra in (
        ("transfer", {"toOrganizationId": buyer_org}),
        ("retire", {"retirementData": {"reason": "r", "beneficiaryName": "b", "comment": "c"}}),
        (
            "transfer_retire",
            {
                "toOrganizationId": buyer_org,
                "retirementData": {"reason": "r", "beneficiaryName": "b"},
            },
        ),
        ("cancel", {}),
    ):
        await call(
            inst,
            "POST",
            f"{base}/inventory/requests/{action}",
            json={"creditId": credit, "amount": 1, **extra},
        )
    page = await call(inst, "GET", f"{base}/inventory/requests", params={"limit": 10, "page": 0})
    await call(inst, "GET", f"{base}/inventory/requests/{page['creditRequests'][0]['id']}")
    retirements = await call(inst, "GET", f"{base}/retirements")
    await call(inst, "GET", f"{base}/retirements/{retirements['retirements'][-1]['id']}/pdf")

    reservations = f"{base}/warehouse/inventory/reservations"
    for action in ("transfer", "retire", "transfer_retire"):
        made = await call(
            inst,
            "POST",
            reservations,
            json={"creditId": credit, "organizationId": org, "amount": 2},
        )
        body: dict[str, Any] = {"receiverId": buyer_org}
        if action != "transfer":
            body["retirementData"] = {"reason": "r", "beneficiaryName": "b"}
        await call(inst, "POST", f"{reservations}/{made['id']}/{action}", json=body)
    held = await call(
        inst, "POST", reservations, json={"creditId": credit, "organizationId": org, "amount": 2}
    )
    listed = await call(inst, "GET", reservations, params={"limit": 10, "page": 0})
    await call(inst, "DELETE", f"{reservations}/{held['id']}")
    await call(client.app_token_client(), "GET", "/projects")
    await call(inst, "DELETE", "/app/installations/token")  # revokes inst's token: last

    assert set(answers) == set(ENDPOINTS), "every documented endpoint was exercised"
    # Each action, its receiver (the organization itself for a retire or cancel), a txId.
    listing = match_endpoint("GET", f"{base}/inventory/requests")
    assert listing is not None
    requests = [r for body in answers[listing] for r in body["creditRequests"]]
    assert [r["action"] for r in requests] == ["transfer", "retire", "transfer_retire", "cancel"]
    assert [r["toOrganizationId"] for r in requests] == [buyer_org, org, buyer_org, org]
    assert any(r["txId"] for r in requests)
    assert [r["isComplete"] for r in listed["reservations"]] == [True, True, True, False]
    assert {r["reserver"]["id"] for r in listed["reservations"]} == {app_id}
    # Every request went to a documented path, as recorded by the client itself.
    assert all(match_endpoint(m, p) is not None for m, p in recorder.calls)


async def test_the_old_reservation_paths_do_not_exist(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    installation = emulator.installations(app_id)[0]
    org = installation["organization"]["id"]
    inst = client.installation(installation["id"])
    credit = emulator.ledger.grant_credits(org, amount=10)
    old = f"/organizations/{org}/warehouse/reservations"
    assert match_endpoint("GET", old) is None
    with pytest.raises(NotFoundError):
        await inst.request("GET", old)
    with pytest.raises(NotFoundError):
        await inst.request(
            "POST", old, json={"creditId": credit, "organizationId": org, "amount": 1}
        )
    with pytest.raises(NotFoundError):
        await inst.request("DELETE", f"{old}/some-id")
    assert emulator.ledger.available(org, credit) == 10


def test_a_webhook_sender_is_a_documented_user(private_key_pem: str) -> None:
    emulator = ICREmulator(seed=5)
    emulator.webhooks.configure("http://127.0.0.1:9/hook", None)
    app = emulator.create_app(private_key_pem=private_key_pem)
    emulator.add_installation(app.app_id)
    (delivery,) = emulator.webhooks.deliveries
    assert shape_problems("User", delivery.payload["sender"]) == []


def test_the_checker_finds_what_is_wrong() -> None:
    # The contract's own checker must be able to fail, or (a) proves nothing.
    good = _sample("Retirement", optional=True)
    assert shape_problems("Retirement", good) == []
    assert shape_problems("Retirement", {**good, "serialNumber": "x"}) == [
        "$.serialNumber: not a documented Retirement field"
    ]
    assert shape_problems("Retirement", {**good, "amount": "10"}) == [
        "$.amount: string, documented as number"
    ]
    missing = {k: v for k, v in good.items() if k != "serialization"}
    assert shape_problems("Retirement", missing) == [
        "$.serialization: missing (required in Retirement)"
    ]
    nested = {**good, "project": {"id": "p"}}
    assert shape_problems("Retirement", nested) == [
        "$.project.fullName: missing (required in ProjectRef)"
    ]
    reservation = _sample("Reservation", optional=True)
    assert shape_problems("Reservation", {**reservation, "createdAt": "yesterday"}) == [
        "$.createdAt: 'yesterday' is not an ISO-8601 date-time"
    ]
    assert match_endpoint("POST", "/organizations/o/inventory/requests/burn") is None
    assert match_endpoint("DELETE", "/app/installations/token") == ENDPOINTS[2]


# ------------------------------------------------------------------------ (b) the models


def _value(field: Field, name: str) -> Any:
    kind = next(t for t in field.types if t != NULL)
    if kind == STRING:
        return f"{name}-value"
    if kind == NUMBER:
        # Fractional amounts must survive; counters and years are whole.
        return {"amount": 12.5, "supply": 1000.5, "vintage": 2021}.get(name, 7)
    if kind == BOOLEAN:
        return True
    if kind == DATETIME:
        return "2024-05-06T07:08:09.123Z"
    if kind == OBJECT:
        return _sample(field.of, optional=True) if field.of else {"organization_info": "VIEW"}
    assert kind == ARRAY
    return [_sample(field.of, optional=True)] if field.of else [{"id": "i", "name": "Forestry"}]


def _sample(name: str | None, *, optional: bool) -> dict[str, Any]:
    """An ICR-shaped object: every required field, and the optional ones if asked."""
    assert name is not None
    return {
        key: _value(field, key)
        for key, field in OBJECTS[name].fields.items()
        if field.required or optional
    }


def _expected(field: Field, raw: Any) -> Callable[[Any], bool]:
    kind = next(t for t in field.types if t != NULL)
    if kind == DATETIME:
        return lambda got: (
            got == datetime.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=datetime.timezone.utc)
        )
    if kind == NUMBER:
        return lambda got: type(got) in (int, float) and got == raw
    if kind == OBJECT and field.of is not None:
        return lambda got: attrs.has(type(got)) and got.extra == {}
    if kind == ARRAY and field.of is not None:
        return lambda got: len(got) == 1 and got[0].extra == {}
    if kind == OBJECT:
        return lambda got: dict(got) == raw
    if kind == ARRAY:
        return lambda got: list(got) == raw
    return lambda got: got == raw


def test_every_documented_object_is_modelled_or_a_list() -> None:
    assert set(OBJECTS) == set(MODELS) | LISTS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_documented_field_maps_to_a_model_attribute(name: str) -> None:
    cls = MODELS[name]
    names = {f.name for f in attrs.fields(cls)}
    missing = [key for key in OBJECTS[name].fields if snake(key) not in names]
    assert missing == [], f"{cls.__name__} has no attribute for {missing}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_icr_shaped_object_decodes_completely(name: str) -> None:
    cls = MODELS[name]
    data = _sample(name, optional=True)
    obj = structure(data, cls)
    # Nothing documented is left unread: a field with no attribute would land in extra.
    assert getattr(obj, "extra", {}) == {}
    for key, field in OBJECTS[name].fields.items():
        got = getattr(obj, snake(key))
        assert _expected(field, data[key])(got), (key, got)


@pytest.mark.parametrize(
    "name", sorted(n for n in MODELS if any(not f.required for f in OBJECTS[n].fields.values()))
)
def test_missing_optional_fields_decode_to_none(name: str) -> None:
    cls = MODELS[name]
    data = _sample(name, optional=False)
    data["fieldIcrAddsTomorrow"] = {"x": 1}
    obj = structure(data, cls)
    for key, field in OBJECTS[name].fields.items():
        if not field.required:
            assert getattr(obj, snake(key)) is None, key
    # Unknown keys are kept by every model that has an ``extra`` (Pagination has none).
    assert getattr(obj, "extra", {"fieldIcrAddsTomorrow": {"x": 1}}) == {
        "fieldIcrAddsTomorrow": {"x": 1}
    }


def test_nullable_documented_fields_decode_to_none() -> None:
    data = {**_sample("CreditRequest", optional=True), "txId": None, "retirementComment": None}
    request = structure(data, CreditRequest)
    assert (request.tx_id, request.retirement_comment) == (None, None)
    assert request.extra == {}


# ------------------------------------------------------------------- (c) the SDK's paths

CALLED_BY_THE_SDK = frozenset(
    {
        "get_organization",
        "list_addresses",
        "list_retirements",
        "get_retirement_pdf",
        "get_inventory",
        "list_credit_requests",
        "iter_credit_requests",
        "get_credit_request",
        "create_credit_action",
        "transfer_credits",
        "retire_credits",
        "transfer_and_retire_credits",
        "cancel_credits",
        "get_warehouse_inventory",
        "list_reservations",
        "iter_reservations",
        "create_reservation",
        "finish_reservation",
        "cancel_reservation",
    }
)
# Not endpoints: the installation's own id, its organization's id (from its token) and the
# idempotency store's forget.
LOCAL_ONLY = frozenset({"forget_action", "installation_id", "organization_id"})


def test_the_exercise_below_covers_every_organization_method() -> None:
    public = {n for n in vars(OrganizationEndpoints) if not n.startswith("_")}
    assert public == CALLED_BY_THE_SDK | LOCAL_ONLY


@pytest.mark.parametrize("variant", ["icr-docs", "everything-else"])
async def test_the_sdk_calls_only_documented_organization_paths(
    make_client: Callable[..., AsyncICRClient], emulator: ICREmulator, app_id: str, variant: str
) -> None:
    VARIANTS[variant].apply(emulator)
    recorder = Recorder()
    client = make_client(on_request=recorder)
    installations = emulator.installations(app_id)
    inst = client.installation(installations[0]["id"])
    org = installations[0]["organization"]["id"]
    buyer = installations[1]["organization"]["id"]
    credit = emulator.ledger.grant_credits(org, amount=100)

    await inst.get_organization()
    await inst.list_addresses()
    retirements = await inst.list_retirements()
    await inst.get_retirement_pdf(retirements[0].id)
    await inst.get_inventory()
    await inst.transfer_credits(credit_id=credit, amount=1, to_organization_id=buyer)
    await inst.retire_credits(credit_id=credit, amount=1, retirement_data=RETIREMENT)
    await inst.transfer_and_retire_credits(
        credit_id=credit, amount=1, to_organization_id=buyer, retirement_data=RETIREMENT
    )
    await inst.cancel_credits(credit_id=credit, amount=1)
    made = await inst.create_credit_action(
        "transfer", credit_id=credit, amount=1, to_organization_id=buyer
    )
    await inst.get_credit_request(made.id)
    await inst.list_credit_requests(limit=2)
    assert len([r async for r in inst.iter_credit_requests(page_size=2)]) == 5
    await inst.get_warehouse_inventory()
    for action in ("transfer", "retire", "transfer_retire"):
        reservation = await inst.create_reservation(credit_id=credit, amount=1)
        await inst.finish_reservation(
            reservation.id,
            action,
            receiver_id=buyer,
            retirement_data=None if action == "transfer" else RETIREMENT,
        )
    held = await inst.create_reservation(credit_id=credit, amount=1)
    await inst.list_reservations()
    assert len([r async for r in inst.iter_reservations(page_size=3)]) == 4
    await inst.cancel_reservation(held.id)

    org_calls = [(m, p) for m, p in recorder.calls if p.startswith("/organizations/")]
    undocumented = [(m, p) for m, p in org_calls if match_endpoint(m, p) is None]
    assert undocumented == []
    reached = {match_endpoint(m, p) for m, p in org_calls}
    assert reached == set(ORGANIZATION_ENDPOINTS)
    # The concrete action paths too, not only their template.
    assert {
        p.rsplit("/", 1)[1] for m, p in org_calls if "/inventory/requests/" in p and m == "POST"
    } == {
        "transfer",
        "retire",
        "transfer_retire",
        "cancel",
    }


@pytest.mark.parametrize(
    "call",
    [
        lambda inst: inst.list_credit_requests(limit=0),
        lambda inst: inst.list_credit_requests(page=-1),
        lambda inst: inst.list_reservations(limit=0),
        lambda inst: inst.list_reservations(limit=True),
        lambda inst: inst.get_credit_request("../x"),
        lambda inst: inst.get_retirement_pdf(""),
        lambda inst: inst.create_reservation(credit_id="c", amount=0),
        lambda inst: inst.create_reservation(credit_id=" ", amount=1),
        lambda inst: inst.finish_reservation("r/1", "retire", receiver_id="o"),
        lambda inst: inst.finish_reservation("r", "burn", receiver_id="o"),
        lambda inst: inst.cancel_reservation("a b"),
        lambda inst: inst.transfer_credits(credit_id="c", amount=-2, to_organization_id="o"),
    ],
)
async def test_bad_arguments_raise_before_any_request_or_mint(
    make_client: Callable[..., AsyncICRClient],
    emulator: ICREmulator,
    app_id: str,
    call: Callable[[AsyncInstallationClient], Any],
) -> None:
    recorder = Recorder()
    client = make_client(on_request=recorder)
    inst = client.installation(emulator.installations(app_id)[0]["id"])
    with pytest.raises(InvalidArgumentError):
        await call(inst)
    assert recorder.calls == []
    assert sum(emulator.stats.mints.values()) == 0
    assert emulator.stats.total_requests == 0
    assert sum(client.stats.mints.values()) == 0
    assert client.stats.requests == 0
