"""The compiled fast path of the converter must agree with cattrs, the reference, always."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icr_async._converters import _fast_fn, camel, converter, structure
from icr_async._token_answer import AccessTokenAnswer
from icr_async.errors import ResponseDecodeError
from icr_async.models import (
    Address,
    CreatedOrganization,
    Credit,
    CreditRequest,
    Installation,
    Inventory,
    Organization,
    Pagination,
    Project,
    ProjectRef,
    Reservation,
    Reserver,
    Retirement,
    Transaction,
    User,
    WarehouseCredit,
    WarehouseInventory,
)
from icr_async.testing import ICREmulator
from icr_async.webhooks import WebhookEvent

MODELS = [
    AccessTokenAnswer,
    Installation,
    Organization,
    Pagination,
    CreatedOrganization,
    User,
    ProjectRef,
    Reserver,
    Credit,
    WarehouseCredit,
    Inventory,
    WarehouseInventory,
    CreditRequest,
    Retirement,
    Reservation,
    Address,
    Project,
    Transaction,
    WebhookEvent,
]

RESERVATION: dict[str, Any] = {
    "id": "r-1",
    "amount": 5,
    "createdAt": "2024-01-01T00:00:00.000Z",
    "updatedAt": "2024-01-01T00:00:00.000Z",
    "tokenId": "2",
    "tokenAddress": "0xabc",
    "type": "exPost",
    "reservedToDate": "2024-01-01T00:10:00.000Z",
    "serialization": "ICR-IS-2021-2-000001",
    "isComplete": False,
    "project": {"id": "p-1", "fullName": "Kelp"},
    "reserver": {"id": "app-1", "name": "Shop"},
    "creditId": "exPost-2-0xabc",
}


@pytest.fixture(scope="module")
def installation_json() -> dict[str, Any]:
    emulator = ICREmulator(seed=3)
    app = emulator.create_app(installations=1)
    return emulator.installations(app.app_id)[0]


@pytest.mark.parametrize("cls", MODELS)
def test_every_core_model_has_a_fast_path(cls: type[Any]) -> None:
    assert _fast_fn(cls) is not None


def test_fast_path_equals_cattrs_on_emulator_data(installation_json: dict[str, Any]) -> None:
    fast = _fast_fn(Installation)
    assert fast is not None
    assert fast(installation_json) == converter.structure(installation_json, Installation)


def test_webhook_event_fast_path_equals_cattrs(installation_json: dict[str, Any]) -> None:
    # Webhook payloads go through the same converter and fast path as API answers.
    payload = {
        "event": "warehouseTransaction",
        "installation": installation_json,
        "sender": {"id": "u-1", "email": "a@example.com", "role": "admin"},
        "transaction": {"id": "t-1", "amount": 5, "project": {"id": "p-1"}, "new": 1},
        "verified": True,
    }
    fast = _fast_fn(WebhookEvent)
    assert fast is not None
    event = fast(payload)
    assert event == converter.structure(payload, WebhookEvent)
    assert event.installation == structure(installation_json, Installation)
    assert event.verified is False  # a local field: never read from the payload
    assert event.transaction.extra == {"new": 1}


def test_unknown_keys_are_kept_by_the_fast_path(installation_json: dict[str, Any]) -> None:
    data = copy.deepcopy(installation_json)
    data["brandNew"] = {"x": 1}
    data["organization"]["alsoNew"] = [1]
    inst = structure(data, Installation)
    assert inst.extra == {"brandNew": {"x": 1}}
    assert inst.organization is not None
    assert inst.organization.extra == {"alsoNew": [1]}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"id": 67890}, "67890"),  # a number where a string is declared: cattrs converts it
        ({"appId": 5}, "5"),
    ],
)
def test_unusual_shapes_fall_back_to_cattrs(
    installation_json: dict[str, Any], change: dict[str, Any], expected: str
) -> None:
    data = {**installation_json, **change}
    inst = structure(data, Installation)
    key = next(iter(change))
    assert getattr(inst, "id" if key == "id" else "app_id") == expected


def test_missing_required_field_is_explained_by_cattrs(installation_json: dict[str, Any]) -> None:
    data = copy.deepcopy(installation_json)
    del data["organization"]["id"]
    installation = structure(data, Installation)  # the organization waits for its first read
    with pytest.raises(ResponseDecodeError) as info:
        installation.organization  # noqa: B018
    assert info.value.field == "organization.id"
    assert "could not read Installation" in str(info.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    overrides=st.dictionaries(
        st.sampled_from(
            [
                "id",
                "createdAt",
                "updatedAt",
                "permissions",
                "appId",
                "appNameId",
                "organization",
                "accessTokensUrl",
            ]
        ),
        json_values,
        max_size=4,
    )
)
def test_fast_path_never_disagrees_with_cattrs(overrides: dict[str, Any]) -> None:
    data = {
        "id": "i-1",
        "createdAt": "2024-01-01T00:00:00Z",
        "organization": {"id": "o-1"},
        **overrides,
    }
    try:
        reference: Any = converter.structure(data, Installation)
    except Exception:
        reference = None
    try:
        got: Any = structure(data, Installation)
        _every_field(got)  # the lazy fields (dates, organization) are judged when read
    except ResponseDecodeError:
        got = None
    assert got == reference


def test_fast_path_equals_cattrs_on_emulator_retirements() -> None:
    emulator = ICREmulator(seed=3)
    app = emulator.create_app(installations=1)
    org = emulator.installations(app.app_id)[0]["organization"]["id"]
    (retirement,) = emulator.ledger.retirements(org)
    fast = _fast_fn(Retirement)
    assert fast is not None
    assert fast(retirement) == converter.structure(retirement, Retirement)
    assert fast(retirement).project.full_name


@settings(max_examples=300, deadline=None)
@given(
    overrides=st.dictionaries(
        st.sampled_from(sorted(RESERVATION)),
        json_values | st.sampled_from([0, 1, "true"]),
        max_size=4,
    )
)
def test_fast_path_never_disagrees_with_cattrs_on_nested_models(overrides: dict[str, Any]) -> None:
    # Reservation nests two models (project, reserver) and every scalar kind.
    data = {**RESERVATION, **overrides}
    try:
        reference: Any = converter.structure(data, Reservation)
    except Exception:
        reference = None
    try:
        got: Any = structure(data, Reservation)
        _every_field(got)  # the lazy dates are judged when read
    except ResponseDecodeError:
        got = None
    assert got == reference
    if got is not None:
        assert got.extra == reference.extra


def test_the_organization_is_decoded_on_its_first_read_only(
    installation_json: dict[str, Any],
) -> None:
    import pickle

    import attrs

    from icr_async._converters import unstructure
    from icr_async._lazy import LazyField

    field = Installation.__dict__["organization"]
    assert isinstance(field, LazyField)
    inst = structure(installation_json, Installation)
    assert (
        type(field.slot.__get__(inst, Installation)) is tuple
    )  # nothing decoded yet (the JSON and the request)
    eager = converter.structure(installation_json, Installation)  # cattrs: always eager
    assert type(field.slot.__get__(eager, Installation)) is not tuple
    org = inst.organization
    assert org is inst.organization  # decoded once, then kept
    assert org == eager.organization
    assert org is not None
    assert org.extra == eager.organization.extra  # type: ignore[union-attr]
    # Everything that reads attributes sees the model, never the marker.
    fresh = structure(installation_json, Installation)
    assert fresh == eager
    assert repr(structure(installation_json, Installation)) == repr(eager)
    assert pickle.loads(pickle.dumps(structure(installation_json, Installation))) == eager
    assert attrs.evolve(structure(installation_json, Installation), id="other").organization == org
    assert unstructure(structure(installation_json, Installation)) == unstructure(eager)


@pytest.mark.parametrize("name", ["created_at", "updated_at"])
def test_dates_are_parsed_on_their_first_read_only(
    installation_json: dict[str, Any], name: str
) -> None:
    import pickle

    from icr_async._lazy import LazyField

    field = Installation.__dict__[name]
    assert isinstance(field, LazyField)
    inst = structure(installation_json, Installation)
    assert type(field.slot.__get__(inst, Installation)) is tuple  # the text, not parsed yet
    eager = converter.structure(installation_json, Installation)
    value = getattr(inst, name)
    assert isinstance(value, datetime.datetime)
    assert value.tzinfo is not None
    assert value == getattr(eager, name)
    assert getattr(inst, name) is value  # parsed once, then kept
    assert type(field.slot.__get__(inst, Installation)) is datetime.datetime
    # Everything that reads attributes sees the datetime, never the marker.
    assert structure(installation_json, Installation) == eager
    assert pickle.loads(pickle.dumps(structure(installation_json, Installation))) == eager
    # A date that does not parse is a ResponseDecodeError on its read, naming the field,
    # the model and the request; the rest of the installation stays readable.
    bad = structure(
        {**installation_json, camel(name): "yesterday"},
        Installation,
        method="GET",
        path="/app/installations",
    )
    assert bad.id == installation_json["id"]
    with pytest.raises(ResponseDecodeError) as info:
        getattr(bad, name)
    assert info.value.field == name
    assert "could not read Installation" in str(info.value)
    assert "GET /app/installations" in str(info.value)
    assert "'yesterday'" in str(info.value)
    # Epoch numbers are not ISO text: those are parsed at once, by the converter's rule.
    epoch = structure({**installation_json, camel(name): 1_700_000_000}, Installation)
    assert type(field.slot.__get__(epoch, Installation)) is datetime.datetime


def test_permissions_are_made_on_their_first_read_only(
    installation_json: dict[str, Any],
) -> None:
    import pickle

    from icr_async._converters import unstructure
    from icr_async._lazy import LazyField
    from icr_async.models import Permissions

    field = Installation.__dict__["permissions"]
    assert isinstance(field, LazyField)
    data = copy.deepcopy(installation_json)
    data["permissions"]["brand_new"] = "ADMIN"  # unknown names and levels are kept
    inst = structure(data, Installation)
    assert type(field.slot.__get__(inst, Installation)) is dict  # the JSON, untouched yet
    eager = converter.structure(data, Installation)
    perms = inst.permissions
    assert isinstance(perms, Permissions)
    assert perms is inst.permissions  # made once, then kept
    assert perms == eager.permissions
    assert perms["brand_new"] == "ADMIN"
    assert perms.can_read("organization_info")
    # Everything that reads attributes sees Permissions, never the dict.
    assert structure(data, Installation) == eager
    assert repr(structure(data, Installation)) == repr(eager)
    assert isinstance(
        pickle.loads(pickle.dumps(structure(data, Installation))).permissions, Permissions
    )
    assert unstructure(structure(data, Installation)) == unstructure(eager)


def _every_field(obj: Any) -> dict[str, Any]:
    # Every field, ``extra`` (eq=False, so ``==`` skips it) and nested models included.
    return {
        f.name: _every_field(getattr(obj, f.name))
        if attrs.has(type(getattr(obj, f.name)))
        else getattr(obj, f.name)
        for f in attrs.fields(type(obj))
    }


@pytest.mark.parametrize("unknown", [{}, {"brandNew": 1}])
def test_filled_slots_are_what_init_sets(installation_json: dict[str, Any], unknown: Any) -> None:
    # The fast path fills the slots of models whose __init__ only stores its arguments:
    # every field, extra included, must read as after a cattrs (so __init__) decode.
    from icr_async._lazy import slot_setters

    assert slot_setters(Installation) is not None
    data = {**installation_json, **unknown}
    fast = _fast_fn(Installation)
    assert fast is not None
    one, two = fast(data), fast(data)
    assert _every_field(one) == _every_field(converter.structure(data, Installation))
    assert one.extra == unknown
    assert one.extra is not two.extra  # a fresh dict each, as attrs' factory makes
    assert attrs.evolve(one) == one


def test_a_page_is_decoded_in_one_pass_or_item_by_item(installation_json: dict[str, Any]) -> None:
    from icr_async._converters import structure_all

    plain = [installation_json, {**installation_json, "id": "other"}]
    decoded = structure_all(plain, Installation, method="GET", path="/app/installations")
    assert decoded == [structure(item, Installation) for item in plain]
    # One item the fast path hands to cattrs (a numeric id), or one that does not decode at
    # all: the caller goes item by item, so the good ones before a bad one still come out.
    for odd in ({**installation_json, "id": 67890}, {"createdAt": "x"}):
        assert structure_all([*plain, odd], Installation, method="GET", path="/p") is None
