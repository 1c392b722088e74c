"""Models and the private converter: camelCase, date-times, unknown keys, missing keys, masking."""

from __future__ import annotations

import datetime
import json
from typing import Any

import attrs
import cattrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from icr_async._converters import (
    LOCAL,
    RULES,
    camel,
    converter,
    make_converter,
    parse_datetime,
    structure,
    unstructure,
)
from icr_async._dates import OneOffDatetime
from icr_async._token_answer import AccessTokenAnswer, token_from_answer
from icr_async.errors import InvalidArgumentError, ResponseDecodeError
from icr_async.models import (
    CreatedOrganization,
    Credit,
    CreditRequest,
    Installation,
    Organization,
    OrganizationType,
    Page,
    Pagination,
    PermissionLevel,
    Permissions,
    Reservation,
    Retirement,
    Token,
    User,
    WarehouseInventory,
)

UTC = datetime.timezone.utc
TOKEN = "crs_" + "5f2d0c9e1a7b" * 3 + "a1b2c3d4e5f6" + "0000" + "9c5b"  # crs_ + 48 chars

INSTALLATION: dict[str, Any] = {
    "id": "0b0c8e3c-1d2f-4a57-9a43-5d1c6c2f3e9b",
    "createdAt": "2023-06-16T10:20:30.123Z",
    "updatedAt": "2023-06-17T10:20:30+02:00",
    "permissions": {
        "organization_info": "VIEW",
        "organization_inventory": "WRITE",
        "organization_quantum": "TELEPORT",
    },
    "appNameId": "app1",
    "appId": "67890",
    "accessTokensUrl": "undefined/app/installations/0b0c8e3c/accessTokens",
    "organization": {
        "id": "org-1",
        "fullName": "Acme Carbon",
        "countryCode": "IS",
        "type": "projectDeveloper",
        "isPublic": True,
        "createdAt": "2022-01-01T00:00:00Z",
        "organizationIndustries": [{"id": 3, "name": "Energy"}],
        "brandNewField": {"nested": [1, 2]},
    },
    "suspendedAt": None,
    "futureFlag": True,
}

ACCESS_TOKEN: dict[str, Any] = {
    "id": "f4a3a3f6-0000-4000-8000-000000000001",
    "createdAt": "2022-01-01T00:00:00Z",
    "updatedAt": "2022-01-01T00:00:00Z",
    "expiresAt": "2022-01-01T02:00:00Z",
    "token": TOKEN,
    "isActive": True,
    "permissions": {"organization_info": "VIEW"},
    "appId": "67890",
    "installationId": "0b0c8e3c-1d2f-4a57-9a43-5d1c6c2f3e9b",
    "organizationId": "org-1",
}


def test_camel() -> None:
    assert camel("access_tokens_url") == "accessTokensUrl"
    assert camel("id") == "id"
    assert camel("page_2_count") == "page2Count"


# --- date-times ------------------------------------------------------------------------------


@pytest.mark.parametrize("digits", range(10))
def test_datetime_fraction_digits_0_to_9(digits: int) -> None:
    fraction = "123456789"[:digits]
    text = f"2022-01-01T00:00:00{'.' + fraction if digits else ''}Z"
    dt = parse_datetime(text)
    assert dt.tzinfo is not None
    assert dt.utcoffset() == datetime.timedelta(0)
    assert dt.microsecond == int((fraction + "000000")[:6])
    assert dt.replace(microsecond=0) == datetime.datetime(2022, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-01-01T00:00:00Z", datetime.datetime(2022, 1, 1, tzinfo=UTC)),
        ("2022-01-01T00:00:00z", datetime.datetime(2022, 1, 1, tzinfo=UTC)),
        ("2022-01-01T02:00:00+02:00", datetime.datetime(2022, 1, 1, tzinfo=UTC)),
        ("2021-12-31T18:30:00-05:30", datetime.datetime(2022, 1, 1, tzinfo=UTC)),
        (
            "2022-01-01T05:30:00.500+05:30",
            datetime.datetime(2022, 1, 1, 0, 0, 0, 500000, tzinfo=UTC),
        ),
        ("2022-01-01T00:00:00", datetime.datetime(2022, 1, 1, tzinfo=UTC)),  # naive -> UTC
        ("  2022-01-01T00:00:00Z ", datetime.datetime(2022, 1, 1, tzinfo=UTC)),
        ("2022-01-01", datetime.datetime(2022, 1, 1, tzinfo=UTC)),
    ],
)
def test_datetime_forms(text: str, expected: datetime.datetime) -> None:
    dt = parse_datetime(text)
    assert dt == expected
    assert dt.tzinfo is not None


def test_datetime_keeps_the_offset_it_was_given() -> None:
    dt = parse_datetime("2022-01-01T02:00:00+02:00")
    assert dt.utcoffset() == datetime.timedelta(hours=2)


def test_datetime_epoch_seconds_and_milliseconds() -> None:
    expected = datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert parse_datetime(1_700_000_000) == expected
    assert parse_datetime(1_700_000_000.0) == expected
    assert parse_datetime(1_700_000_000_000) == expected
    assert parse_datetime(0) == datetime.datetime(1970, 1, 1, tzinfo=UTC)


def test_datetime_aware_passthrough_and_naive_datetime_becomes_utc() -> None:
    aware = datetime.datetime(2022, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert parse_datetime(aware) is aware
    assert parse_datetime(datetime.datetime(2022, 1, 1)).tzinfo is UTC


@pytest.mark.parametrize("value", ["yesterday", "2022-13-01T00:00:00Z", "", "Z"])
def test_datetime_bad_text_is_value_error(value: str) -> None:
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_datetime(value)


@pytest.mark.parametrize("value", [1e20, -1e20, float("nan"), float("inf")])
def test_datetime_out_of_range_epoch_is_value_error(value: float) -> None:
    with pytest.raises(ValueError, match=r"out of range|nan|NaN"):
        parse_datetime(value)


@pytest.mark.parametrize("value", [True, None, [], {}])
def test_datetime_wrong_type_is_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        parse_datetime(value)


def test_structure_a_bare_datetime_out_of_range_is_a_decode_error() -> None:
    with pytest.raises(ResponseDecodeError):
        structure(1e300, datetime.datetime)


# --- installations, organizations, unknown keys ---------------------------------------------


def test_installation_structure() -> None:
    inst = structure(INSTALLATION, Installation)
    assert inst.id == INSTALLATION["id"]
    assert inst.created_at == datetime.datetime(2023, 6, 16, 10, 20, 30, 123000, tzinfo=UTC)
    assert inst.updated_at == datetime.datetime(2023, 6, 17, 8, 20, 30, tzinfo=UTC)
    assert inst.app_name_id == "app1"
    assert inst.app_id == "67890"
    assert inst.access_tokens_url == INSTALLATION["accessTokensUrl"]
    assert inst.extra == {"suspendedAt": None, "futureFlag": True}
    org = inst.organization
    assert org is not None
    assert org.full_name == "Acme Carbon"
    assert org.country_code == "IS"
    assert org.type == OrganizationType.PROJECT_DEVELOPER
    assert org.is_public is True
    assert org.organization_industries == ({"id": 3, "name": "Energy"},)
    assert org.extra == {"brandNewField": {"nested": [1, 2]}}


def test_extra_is_empty_when_nothing_unknown_and_not_part_of_equality() -> None:
    a = structure({"id": "x"}, Installation)
    assert a.extra == {}
    b = structure({"id": "x", "somethingNew": 1}, Installation)
    assert b.extra == {"somethingNew": 1}
    assert a == b
    assert "somethingNew" not in repr(b)


def test_models_without_extra_ignore_unknown_keys() -> None:
    p = structure({"total": 1, "weird": "x"}, Pagination)
    assert p == Pagination(total=1)


def test_numeric_ids_and_lenient_scalars() -> None:
    inst = structure({"id": 67890, "organization": {"id": 5, "isPublic": "true"}}, Installation)
    assert inst.id == "67890"
    assert inst.organization is not None
    assert inst.organization.id == "5"
    assert inst.organization.is_public is True
    p = structure({"total": "12", "currentPage": 1.0, "pageCount": None}, Pagination)
    assert p == Pagination(total=12, current_page=1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("i-1", "i-1"), (67890, "67890"), (0, "0"), (-5, "-5"), (2**70, str(2**70))],
)
def test_one_id_rule_strings_and_integers(value: Any, expected: str) -> None:
    # ICR ids are strings; its docs' examples use integers: an integer is its decimal text.
    assert structure({"id": value}, Installation).id == expected
    assert structure({"id": "x", "appId": value}, Installation).app_id == expected
    assert structure({"id": value}, User).id == expected


@pytest.mark.parametrize("value", [67890.0, 1.5, 1e21, True, False, ["a"], {"a": 1}])
def test_one_id_rule_refuses_floats_booleans_and_containers(value: Any) -> None:
    # str(67890.0) is "67890.0", not the id the server meant: refused, naming the field,
    # on the fast path's fallback and in cattrs alike, for required and optional ids.
    with pytest.raises(ResponseDecodeError) as info:
        structure({"id": value}, Installation)
    assert info.value.field == "id"
    with pytest.raises(ResponseDecodeError) as info:
        structure({"id": "x", "appId": value}, Installation)
    assert info.value.field == "app_id"


def test_every_rule_reads_its_plain_shapes_as_the_fast_path_does() -> None:
    # The fast path inlines exactly a rule's plain branch: plain value -> convert(value).
    samples: dict[type[Any], list[Any]] = {
        str: ["", "x"],
        int: [0, -3, 2**64],
        bool: [True, False],
        float: [0, 1.5, -2],
        datetime.datetime: ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.123456789+02:00"],
        OneOffDatetime: ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.123456789+02:00"],
        Permissions: [{}, {"organization_info": "VIEW"}],
    }
    assert set(samples) == set(RULES)
    for typ, values in samples.items():
        rule = RULES[typ]
        hook = rule.hook()
        for value in values:
            assert type(value) in rule.plain
            expected = value if rule.convert is None else rule.convert(value)
            assert hook(value, typ) == expected
            assert converter.structure(value, typ) == expected


def test_floats_are_numbers_not_booleans() -> None:
    assert structure({"id": "c", "amount": 5}, Credit).amount == 5
    assert structure({"id": "c", "amount": "2.5"}, Credit).amount == 2.5
    with pytest.raises(ResponseDecodeError) as info:
        structure({"id": "c", "amount": True}, Credit)
    assert info.value.field == "amount"


def test_local_fields_are_never_read_from_json() -> None:
    @attrs.frozen
    class Event:
        name: str
        trusted: bool = attrs.field(default=False, metadata=LOCAL)

    assert structure({"name": "x", "trusted": True}, Event) == Event(name="x")
    assert converter.structure({"name": 5, "trusted": True}, Event) == Event(name="5")
    assert unstructure(Event(name="x", trusted=True)) == {"name": "x"}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"createdAt": "2022-01-01T00:00:00Z"}, "id"),
        ({"id": ["a"]}, "id"),
        ({"id": "x", "createdAt": "not a date"}, "created_at"),
        ({"id": "x", "organization": {"fullName": "no id"}}, "organization.id"),
        ({"id": "x", "permissions": ["organization_info"]}, "permissions"),
        ({"id": "x", "organization": "org-1"}, "organization"),
    ],
)
def test_bad_installation_names_the_field(data: dict[str, Any], field: str) -> None:
    # The organization and the dates are decoded when first read (lazy fields): the error
    # is the same, raised by the read.
    def decode_and_read() -> object:
        inst = structure(data, Installation, method="GET", path="/app/installations/x")
        return getattr(inst, field.partition(".")[0])

    with pytest.raises(ResponseDecodeError) as info:
        decode_and_read()
    err = info.value
    assert err.field == field
    # A date's own parse error, or cattrs' naming the field inside a model.
    cause = ValueError if field == "created_at" else cattrs.BaseValidationError
    assert isinstance(err.__cause__, cause)
    assert "Installation" in str(err)
    assert "GET /app/installations/x" in str(err)


def test_non_object_is_a_decode_error_without_field() -> None:
    with pytest.raises(ResponseDecodeError) as info:
        structure(["id"], Installation)
    assert info.value.field is None
    assert isinstance(info.value.__cause__, TypeError)


@pytest.mark.parametrize("missing", ["token", "expiresAt"])
def test_access_token_requires_token_and_expiry(missing: str) -> None:
    data = {k: v for k, v in ACCESS_TOKEN.items() if k != missing}
    with pytest.raises(ResponseDecodeError) as info:
        structure(data, AccessTokenAnswer)
    assert info.value.field == {"token": "token", "expiresAt": "expires_at"}[missing]
    assert isinstance(info.value.__cause__, cattrs.BaseValidationError)
    # The error about the missing expiry must not leak the token it did read.
    assert TOKEN not in str(info.value)


def test_decode_error_text_never_shows_a_token() -> None:
    with pytest.raises(ResponseDecodeError) as info:
        structure({"token": TOKEN, "expiresAt": TOKEN}, AccessTokenAnswer)
    assert TOKEN not in str(info.value)
    assert info.value.field == "expires_at"


# --- tokens ----------------------------------------------------------------------------------


def test_installation_access_token() -> None:
    # The wire model reads ICR's answer as sent (the server's clock) ...
    answer = structure(ACCESS_TOKEN, AccessTokenAnswer)
    assert answer.token == TOKEN
    assert answer.expires_at == datetime.datetime(2022, 1, 1, 2, tzinfo=UTC)
    assert answer.installation_id == ACCESS_TOKEN["installationId"]
    assert answer.organization_id == "org-1"
    assert answer.is_active is True
    assert answer.permissions == {"organization_info": "VIEW"}
    # ... and the Token keeps every fact of it (tests/test_tokens_model.py has the rest).
    now = datetime.datetime(2022, 1, 1, tzinfo=UTC).timestamp()
    tok = token_from_answer(answer, installation_id=None, now=now, server_now=now)
    assert tok.expires_at == answer.expires_at
    for name in ("token", "installation_id", "organization_id", "is_active", "permissions"):
        assert getattr(tok, name) == getattr(answer, name), name
    for name in ("id", "created_at", "updated_at", "app_id"):
        assert getattr(tok, name) == getattr(answer, name), name


def test_token_masked_in_repr_everywhere() -> None:
    answer = structure(ACCESS_TOKEN, AccessTokenAnswer)
    text = repr(answer)
    assert TOKEN not in text
    assert "'crs_…9c5b'" in text
    cached = Token(
        token=TOKEN, expires_at=datetime.datetime(2023, 11, 14, tzinfo=UTC), installation_id="i"
    )
    assert TOKEN not in repr(cached)
    assert "'crs_…9c5b'" in repr(cached)
    assert str(cached) == "crs_…9c5b"
    assert f"{cached!s}" == "crs_…9c5b"
    with pytest.raises(InvalidArgumentError, match="masked"):
        f"Authorization: Bearer {cached}"
    assert cached.token == TOKEN


# --- permissions -----------------------------------------------------------------------------


def test_permissions_mapping_keeps_unknown_names_and_levels() -> None:
    perms = structure(INSTALLATION, Installation).permissions
    assert dict(perms) == INSTALLATION["permissions"]
    assert perms["organization_quantum"] == "TELEPORT"
    assert len(perms) == 3
    assert list(perms) == ["organization_info", "organization_inventory", "organization_quantum"]
    assert perms.can_read("organization_quantum")
    assert not perms.can_write("organization_quantum")
    assert perms.can_write("organization_inventory")
    assert not perms.can_write("organization_info")
    assert not perms.can_read("organization_members")
    assert perms.get("organization_members") is None
    assert perms["organization_info"] == PermissionLevel.VIEW


def test_permissions_read_write_level_and_equality_and_hash() -> None:
    perms = Permissions({"organization_inventory": "read_write"})
    assert perms.can_write("organization_inventory")
    assert perms == {"organization_inventory": "read_write"}
    assert perms == Permissions({"organization_inventory": "read_write"})
    assert perms != Permissions({"organization_inventory": "VIEW"})
    assert perms != "organization_inventory"
    assert hash(perms) == hash(Permissions({"organization_inventory": "read_write"}))
    assert perms.to_dict() == {"organization_inventory": "read_write"}
    assert perms.to_dict() is not perms.to_dict()
    assert "read_write" in repr(perms)


def test_permissions_are_read_only_and_copied() -> None:
    source = {"organization_info": "VIEW"}
    perms = Permissions(source)
    source["organization_info"] = "WRITE"
    assert perms["organization_info"] == "VIEW"
    with pytest.raises(TypeError):
        perms["organization_info"] = "WRITE"  # type: ignore[index]


def test_null_permissions_are_empty() -> None:
    inst = structure({"id": "x", "permissions": None}, Installation)
    assert inst.permissions == Permissions()
    assert len(inst.permissions) == 0


# --- created organization, users, pages ------------------------------------------------------


def test_created_organization() -> None:
    created = structure(
        {
            "installation": {"id": "inst-9"},
            "organization": {"id": "org-9", "fullName": "New Org", "type": "somethingElse"},
            "user": {"email": "a@example.com", "fullName": "A", "role": "owner"},
            "welcome": "hi",
        },
        CreatedOrganization,
    )
    assert created.installation.id == "inst-9"
    assert created.organization is not None
    assert created.organization.type == "somethingElse"  # unknown types kept as text
    assert created.user == User(email="a@example.com", full_name="A")
    assert created.user.url is None
    assert created.user.extra == {"role": "owner"}
    assert created.extra == {"welcome": "hi"}


def test_created_organization_requires_installation() -> None:
    with pytest.raises(ResponseDecodeError) as info:
        structure({"organization": {"id": "o"}}, CreatedOrganization)
    assert info.value.field == "installation"


def test_page() -> None:
    page: Page[int] = Page(items=(1, 2, 3), pagination=Pagination(total=30), page=0, limit=3)
    assert len(page) == 3
    assert list(page) == [1, 2, 3]
    assert page.total == 30
    assert Page(items=(), pagination=None, page=0, limit=3).total is None


def test_enums_are_strings() -> None:
    assert isinstance(PermissionLevel.WRITE, str)
    assert isinstance(OrganizationType.OTHER, str)
    assert PermissionLevel("WRITE") is PermissionLevel.WRITE
    assert OrganizationType("validationBody") is OrganizationType.VALIDATION_BODY
    assert {t.value for t in OrganizationType} == {
        "projectProponent",
        "projectDeveloper",
        "marketParticipant",
        "validationBody",
        "other",
    }


def test_models_are_frozen() -> None:
    inst = structure({"id": "x"}, Installation)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        inst.id = "y"  # type: ignore[misc]


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (Installation, INSTALLATION),
        (AccessTokenAnswer, ACCESS_TOKEN),
        (AccessTokenAnswer, {k: ACCESS_TOKEN[k] for k in ("token", "expiresAt", "permissions")}),
        (Organization, INSTALLATION["organization"]),
        (
            Pagination,
            {"total": 100, "currentPage": 1, "pageCount": 10, "nextPage": 2, "prevPage": 0},
        ),
        (
            CreatedOrganization,
            {"installation": INSTALLATION, "user": {"email": "e@x.org", "extraThing": 1}, "x": 2},
        ),
    ],
)
def test_round_trip(cls: type[Any], data: dict[str, Any]) -> None:
    first = structure(data, cls)
    wire = unstructure(first)
    # The unstructured form is JSON: camelCase keys, Z date-times, unknown keys back in place.
    text = json.dumps(wire)
    assert "_" not in "".join(k for k in wire if k != "permissions")
    second = structure(json.loads(text), cls)
    assert second == first
    assert unstructure(second) == wire
    for key in data:
        assert key in wire


def test_unstructure_formats_datetimes_in_utc_with_z() -> None:
    wire = unstructure(structure(INSTALLATION, Installation))
    assert wire["createdAt"] == "2023-06-16T10:20:30.123000Z"
    assert wire["updatedAt"] == "2023-06-17T08:20:30Z"
    assert wire["accessTokensUrl"] == INSTALLATION["accessTokensUrl"]
    assert wire["permissions"] == INSTALLATION["permissions"]
    assert wire["futureFlag"] is True
    assert wire["organization"]["brandNewField"] == {"nested": [1, 2]}


def test_converter_is_private() -> None:
    assert converter is not cattrs.global_converter
    assert make_converter() is not converter
    assert structure({"id": "x", "appNameId": "a"}, Installation).app_name_id == "a"
    # Nothing was registered on the global converter: it does not know camelCase.
    plain = cattrs.global_converter.structure({"id": "x", "appNameId": "a"}, Installation)
    assert plain.app_name_id is None


# --- arbitrary JSON --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "id",
        "token",
        "expiresAt",
        "createdAt",
        "permissions",
        "organization",
        "installation",
        "user",
        "isActive",
        "isPublic",
        "total",
        "currentPage",
        "organizationIndustries",
        "fullName",
        "amount",
        "supply",
        "serialization",
        "tokenId",
        "project",
        "reserver",
        "isComplete",
        "reservedToDate",
        "txId",
        "state",
        "credits",
        "url",
    ]
)
json_objects = st.dictionaries(field_names, json_values, max_size=8)
model_classes = st.sampled_from(
    [
        Installation,
        AccessTokenAnswer,
        Organization,
        User,
        CreatedOrganization,
        Pagination,
        Credit,
        CreditRequest,
        Reservation,
        Retirement,
        WarehouseInventory,
    ]
)


@given(model_classes, json_values | json_objects)
def test_structure_arbitrary_json_only_raises_decode_errors(cls: type[Any], data: Any) -> None:
    # Any exception other than ResponseDecodeError propagates and fails the test.
    error: ResponseDecodeError | None = None
    try:
        obj = structure(data, cls)
    except ResponseDecodeError as exc:
        error = exc
    if error is not None:
        assert error.__cause__ is not None
        return
    assert isinstance(obj, cls)
    # Whatever was accepted survives a round trip.
    assert structure(unstructure(obj), cls) == obj
