"""Webhook signatures, event parsing (through the API's converter and models), and the aiohttp
handler served for real on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import icr_async
import icr_async.webhooks
from icr_async import Installation, Organization, Permissions, User
from icr_async._converters import structure
from icr_async.models import ProjectRef, Transaction
from icr_async.webhooks import (
    KNOWN_EVENTS,
    SIGNATURE_HEADER,
    EventType,
    WebhookDispatcher,
    WebhookError,
    WebhookEvent,
    WebhookPayloadError,
    WebhookSignatureError,
    parse_event,
    sign_payload,
    verify_signature,
    webhook_handler,
)

SECRET = "whsec-test-7f3a9c"
INSTALLATION: dict[str, Any] = {
    "id": "5b0c7f2e-0000-4000-8000-000000000001",
    "createdAt": "2024-01-02T03:04:05.000Z",
    "updatedAt": "2024-01-02T03:04:05.000Z",
    "permissions": {"organization_info": "VIEW", "organization_inventory": "WRITE"},
    "appNameId": "app1",
    "appId": "a9e1d6a4-0000-4000-8000-000000000002",
    "accessTokensUrl": "undefined/app/installations/5b0c7f2e/accessTokens",
    "organization": {"id": "org-1", "fullName": "Acme", "type": "projectDeveloper"},
}
# ICR's example delivery names the user who caused the event.
SENDER: dict[str, Any] = {
    "id": "user-1",
    "url": "anna-berg",
    "email": "admin@example.com",
    "fullName": "Anna Berg",
    "profilePicture": "https://example.com/anna.png",
}


def payload(event: str = EventType.INSTALLED, **extra: Any) -> dict[str, Any]:
    return {"event": event, "installation": INSTALLATION, "sender": SENDER, **extra}


def hexsig(data: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def b64json(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def assert_no_secret(exc: BaseException, data: bytes = b"") -> None:
    text = str(exc) + repr(exc)
    assert SECRET not in text
    if data:
        expected = hmac.new(SECRET.encode(), data, hashlib.sha256).hexdigest()
        assert expected not in text.lower()


# --------------------------------------------------------------------------- verify_signature


class TestVerifySignature:
    def test_valid(self) -> None:
        verify_signature("abc", hexsig(b"abc"), SECRET)
        verify_signature(b"abc", hexsig(b"abc"), SECRET.encode())

    def test_tolerates_case_and_whitespace(self) -> None:
        header = hexsig(b"abc")
        verify_signature("abc", "  " + header.upper().replace("SHA256", "sha256") + "\t", SECRET)
        verify_signature("abc", "SHA256=" + header.split("=", 1)[1], SECRET)

    def test_mismatch(self) -> None:
        with pytest.raises(WebhookSignatureError, match="mismatch") as info:
            verify_signature("abd", hexsig(b"abc"), SECRET)
        assert_no_secret(info.value, b"abd")

    def test_wrong_secret(self) -> None:
        with pytest.raises(WebhookSignatureError, match="mismatch") as info:
            verify_signature("abc", hexsig(b"abc", "other"), SECRET)
        assert_no_secret(info.value, b"abc")

    @pytest.mark.parametrize("header", [None, "", "   "])
    def test_missing(self, header: str | None) -> None:
        with pytest.raises(WebhookSignatureError, match="missing x-icr-signature-256"):
            verify_signature("abc", header, SECRET)

    @pytest.mark.parametrize(
        "header", ["sha1=" + "a" * 40, "a" * 64, "sha512=" + "a" * 128, "bearer x"]
    )
    def test_wrong_scheme(self, header: str) -> None:
        with pytest.raises(WebhookSignatureError, match="scheme"):
            verify_signature("abc", header, SECRET)

    @pytest.mark.parametrize(
        "digest", ["", "zz" * 32, "a" * 63, "a" * 65, "ab " * 21 + "a", "a" * 62 + "é1"]
    )
    def test_bad_hex(self, digest: str) -> None:
        with pytest.raises(WebhookSignatureError, match="malformed"):
            verify_signature("abc", "sha256=" + digest, SECRET)

    def test_empty_secret_is_refused(self) -> None:
        with pytest.raises(ValueError, match="empty"):
            verify_signature("abc", hexsig(b"abc"), "")

    def test_error_tree(self) -> None:
        assert issubclass(WebhookSignatureError, WebhookError)
        assert issubclass(WebhookPayloadError, WebhookError)
        assert issubclass(WebhookError, icr_async.ICRError)
        # One error tree: the webhook errors live in icr_async.errors, re-exported here.
        assert WebhookError is icr_async.errors.WebhookError is icr_async.WebhookError
        assert WebhookPayloadError is icr_async.WebhookPayloadError
        assert WebhookSignatureError is icr_async.WebhookSignatureError
        assert WebhookError.__module__ == "icr_async.errors"
        err = WebhookPayloadError("boom")
        assert err.message == "boom"
        assert str(err) == "boom"


# --------------------------------------------------------------------------- sign_payload


class TestSignPayload:
    def test_body_and_headers(self) -> None:
        body, headers = sign_payload(payload(), SECRET)
        outer = json.loads(body)
        assert headers["content-type"] == "application/json"
        assert headers[SIGNATURE_HEADER] == hexsig(outer["signedData"].encode())
        assert json.loads(base64.b64decode(outer["signedData"])) == payload()
        assert {k: v for k, v in outer.items() if k != "signedData"} == payload()

    def test_legacy_signs_whole_body(self) -> None:
        body, headers = sign_payload(payload(), SECRET, legacy_whole_body=True)
        assert headers[SIGNATURE_HEADER] == hexsig(body)

    def test_refuses_signed_data_in_payload(self) -> None:
        with pytest.raises(ValueError, match="signedData"):
            sign_payload({"event": "x", "signedData": "e30="}, SECRET)


# --------------------------------------------------------------------------- parse_event


class TestParseEvent:
    def test_valid_signature(self) -> None:
        body, headers = sign_payload(payload(), SECRET)
        event = parse_event(body, signature=headers[SIGNATURE_HEADER], secret=SECRET)
        assert event.event == EventType.INSTALLED
        assert event.verified is True
        assert event.is_known
        assert event.raw == payload()
        assert event.sender == User(
            id="user-1",
            url="anna-berg",
            email="admin@example.com",
            full_name="Anna Berg",
            profile_picture="https://example.com/anna.png",
        )
        assert event.sender is not None
        assert event.sender.extra == {}
        assert event.raw["sender"] == SENDER
        assert event.transaction is None
        inst = event.installation
        assert type(inst) is Installation
        assert inst.id == INSTALLATION["id"]
        assert inst.app_id == INSTALLATION["appId"]
        assert inst.app_name_id == "app1"
        assert isinstance(inst.permissions, Permissions)
        assert inst.permissions == INSTALLATION["permissions"]
        assert inst.permissions.can_write("organization_inventory")
        assert inst.organization == Organization(
            id="org-1", full_name="Acme", type="projectDeveloper"
        )
        assert inst.organization_id == "org-1"
        assert inst.access_tokens_url == INSTALLATION["accessTokensUrl"]
        assert inst.created_at is not None
        assert inst.created_at.isoformat() == "2024-01-02T03:04:05+00:00"
        assert inst.extra == {}
        assert event.installation_id == INSTALLATION["id"]

    def test_installation_is_read_exactly_like_an_api_answer(self) -> None:
        # The same model, the same converter: a webhook's installation equals what
        # GET /app/installations/{id} gives for the same JSON, field for field and extra.
        data = {**INSTALLATION, "suspendedAt": None, "futureFlag": True}
        body, headers = sign_payload(payload(installation=data), SECRET)
        event = parse_event(body, signature=headers[SIGNATURE_HEADER], secret=SECRET)
        api = structure(data, Installation)
        assert event.installation == api
        assert event.installation is not None
        assert event.installation.extra == api.extra == {"suspendedAt": None, "futureFlag": True}
        assert attrs.asdict(event.installation) == attrs.asdict(api)

    def test_accepts_str_and_mapping_bodies(self) -> None:
        body, headers = sign_payload(payload(), SECRET)
        sig = headers[SIGNATURE_HEADER]
        from_str = parse_event(body.decode(), signature=sig, secret=SECRET)
        from_map = parse_event(json.loads(body), signature=sig, secret=SECRET.encode())
        assert from_str == from_map == parse_event(body, signature=sig, secret=SECRET)

    def test_tampered_signed_data(self) -> None:
        body, headers = sign_payload(payload(), SECRET)
        outer = json.loads(body)
        outer["signedData"] = b64json(payload(EventType.UNINSTALLED))
        with pytest.raises(WebhookSignatureError, match="mismatch") as info:
            parse_event(outer, signature=headers[SIGNATURE_HEADER], secret=SECRET)
        assert_no_secret(info.value, outer["signedData"].encode())

    def test_tampered_outer_body_is_ignored(self) -> None:
        body, headers = sign_payload(payload(), SECRET)
        outer = json.loads(body)
        forged_installation = {**INSTALLATION, "id": "attacker", "permissions": {"x": "WRITE"}}
        outer.update(event=EventType.UNINSTALLED, installation=forged_installation, extra=1)
        event = parse_event(
            json.dumps(outer).encode(), signature=headers[SIGNATURE_HEADER], secret=SECRET
        )
        assert event.event == EventType.INSTALLED
        assert event.installation is not None
        assert event.installation.id == INSTALLATION["id"]
        assert event.raw == payload()
        assert "extra" not in event.raw

    def test_wrong_secret(self) -> None:
        body, headers = sign_payload(payload(), "another-secret")
        with pytest.raises(WebhookSignatureError, match="mismatch") as info:
            parse_event(body, signature=headers[SIGNATURE_HEADER], secret=SECRET)
        assert_no_secret(info.value)

    def test_missing_header(self) -> None:
        body, _ = sign_payload(payload(), SECRET)
        with pytest.raises(WebhookSignatureError, match="missing"):
            parse_event(body, signature=None, secret=SECRET)

    def test_missing_header_wins_over_malformed_body(self) -> None:
        with pytest.raises(WebhookSignatureError, match="missing"):
            parse_event(b"not json", signature=None, secret=SECRET)

    def test_wrong_scheme(self) -> None:
        body, headers = sign_payload(payload(), SECRET)
        sig = headers[SIGNATURE_HEADER].replace("sha256=", "sha1=")
        with pytest.raises(WebhookSignatureError, match="scheme"):
            parse_event(body, signature=sig, secret=SECRET)

    def test_bad_hex(self) -> None:
        body, _ = sign_payload(payload(), SECRET)
        with pytest.raises(WebhookSignatureError, match="malformed"):
            parse_event(body, signature="sha256=" + "g" * 64, secret=SECRET)

    def test_header_case_and_space_tolerated(self) -> None:
        body, headers = sign_payload(payload(), SECRET)
        sig = " " + headers[SIGNATURE_HEADER].upper().replace("SHA256", "sha256") + " "
        assert parse_event(body, signature=sig, secret=SECRET).verified

    @pytest.mark.parametrize(
        ("body", "match"),
        [
            (b"not json", "request body is not valid JSON"),
            (b"\xff\xfe\x00garbage", "request body is not valid JSON"),
            (b"[1, 2]", "request body is not a JSON object"),
            (b"[" * 100_000 + b"]" * 100_000, "request body is"),
            (b"{}", "no signedData"),
            (b'{"signedData": 5}', "base64 string"),
        ],
    )
    def test_malformed_outer_body(self, body: bytes, match: str) -> None:
        with pytest.raises(WebhookPayloadError, match=match):
            parse_event(body, signature=hexsig(b"x"), secret=SECRET)

    @pytest.mark.parametrize(
        ("signed_data", "match"),
        [
            ("***not base64***", "not valid base64"),
            ("é" * 8, "not valid base64"),
            ("abcde", "not valid base64"),
            (base64.b64encode(b"{not json").decode(), "decoded signedData is not valid JSON"),
            (base64.b64encode(b"\xff\xfe\xfa").decode(), "decoded signedData is not valid"),
            (b64json(["installed"]), "decoded signedData is not a JSON object"),
            (b64json({"installation": INSTALLATION}), r"required field missing @ payload\.event"),
            (b64json({"event": None}), r"payload\.event"),
            (b64json({"event": ["installed"]}), r"payload\.event"),
            (b64json({"event": 7.5}), r"payload\.event"),
            (b64json({"event": ""}), r"empty event name @ payload\.event"),
            (b64json(payload(sender="user-1")), r"payload\.sender"),
            (b64json(payload(sender={"id": ["u"]})), r"payload\.sender\.id"),
            (b64json(payload(sender={"email": True})), r"payload\.sender\.email"),
            (b64json(payload(transaction=[1])), r"payload\.transaction"),
            (b64json(payload(transaction={"amount": "lots"})), r"payload\.transaction\.amount"),
            (b64json({"event": "x", "installation": "i-1"}), r"payload\.installation"),
            (b64json({"event": "x", "installation": {"appId": "a"}}), r"installation\.id"),
            (b64json({"event": "x", "installation": {"id": True}}), r"installation\.id"),
            (b64json({"event": "x", "installation": {"id": 67890.0}}), r"installation\.id"),
            (b64json({"event": "x", "installation": {"id": 1.5}}), r"installation\.id"),
            (
                b64json({"event": "x", "installation": {"id": "i", "organization": {}}}),
                r"installation\.organization\.id",
            ),
            (
                b64json({"event": "x", "installation": {"id": "i", "permissions": ["a"]}}),
                r"installation\.permissions",
            ),
        ],
    )
    def test_malformed_signed_data(self, signed_data: str, match: str) -> None:
        body = json.dumps({"event": "installed", "signedData": signed_data}).encode()
        sig = hexsig(signed_data.encode())
        with pytest.raises(WebhookPayloadError, match=match) as info:
            parse_event(body, signature=sig, secret=SECRET)
        assert_no_secret(info.value, signed_data.encode())

    @pytest.mark.parametrize("name", sorted(KNOWN_EVENTS))
    def test_every_known_event(self, name: str) -> None:
        transaction = {"id": "tx-1", "amount": 5, "creditId": "c-1"}
        body, headers = sign_payload(payload(name, transaction=transaction), SECRET)
        event = parse_event(body, signature=headers[SIGNATURE_HEADER], secret=SECRET)
        assert event.event == name
        assert event.is_known
        assert event.transaction == Transaction(id="tx-1", amount=5, credit_id="c-1")
        assert event.raw["transaction"] == transaction

    def test_transaction_model(self) -> None:
        transaction = {
            "id": "t-1",
            "txId": "0x" + "ab" * 32,
            "action": "retire",
            "type": "exPost",
            "creditId": "exPost-2-0xabc",
            "tokenId": 2,
            "serialization": "ICR-IS-2021-2-000001",
            "project": {"id": "p-1", "fullName": "Kelp"},
            "amount": 2.5,
            "fromOrganizationId": "org-1",
            "reservationId": "r-1",
            "retirementId": "ret-1",
            "createdAt": "2024-01-01T00:00:00.000Z",
            "blockNumber": 42,
        }
        data = payload(EventType.WAREHOUSE_TRANSACTION, transaction=transaction)
        body, headers = sign_payload(data, SECRET)
        event = parse_event(body, signature=headers[SIGNATURE_HEADER], secret=SECRET)
        tx = event.transaction
        assert tx is not None
        assert (tx.action, tx.amount, tx.credit_id) == ("retire", 2.5, "exPost-2-0xabc")
        assert tx.token_id == "2"
        assert tx.project == ProjectRef(id="p-1", full_name="Kelp")
        assert (tx.reservation_id, tx.retirement_id, tx.credit_request_id) == ("r-1", "ret-1", None)
        assert tx.created_at is not None
        assert tx.created_at.year == 2024
        assert tx.extra == {"blockNumber": 42}

    def test_event_type_constants(self) -> None:
        documented = {
            "installed",
            "uninstalled",
            "suspended",
            "unsuspended",
            "newPermissionsAccepted",
            "warehouseTransaction",
            "organizationTransaction",
        }
        assert documented == KNOWN_EVENTS
        assert EventType.NEW_PERMISSIONS_ACCEPTED == "newPermissionsAccepted"

    def test_unknown_event_and_keys_are_kept(self) -> None:
        data = payload("creditsMinted", futureKey={"a": 1})
        data["installation"] = {**INSTALLATION, "permissions": {"new_perm": "ADMIN"}, "z": 1}
        body, headers = sign_payload(data, SECRET)
        event = parse_event(body, signature=headers[SIGNATURE_HEADER], secret=SECRET)
        assert type(event) is WebhookEvent
        assert event.event == "creditsMinted"
        assert not event.is_known
        assert event.raw["futureKey"] == {"a": 1}
        assert event.installation is not None
        assert event.installation.permissions == {"new_perm": "ADMIN"}
        assert event.installation.extra == {"z": 1}
        assert event.raw["installation"]["z"] == 1

    def test_sender_keeps_unknown_keys_and_numeric_ids(self) -> None:
        sender = {"id": 42, "email": "a@example.com", "role": "admin"}
        body, headers = sign_payload(payload(sender=sender), SECRET)
        event = parse_event(body, signature=headers[SIGNATURE_HEADER], secret=SECRET)
        assert event.sender == User(id="42", email="a@example.com")
        assert event.sender is not None
        assert event.sender.extra == {"role": "admin"}
        assert event.sender.url is None

    def test_minimal_payload(self) -> None:
        body, headers = sign_payload({"event": "suspended"}, SECRET)
        event = parse_event(body, signature=headers[SIGNATURE_HEADER], secret=SECRET)
        assert event.installation is None
        assert event.installation_id is None
        assert event.sender is None

    def test_numeric_ids_and_null_permissions(self) -> None:
        inst = {"id": 67890, "appId": 12345, "permissions": None, "organization": None}
        body, headers = sign_payload({"event": "installed", "installation": inst}, SECRET)
        event = parse_event(body, signature=headers[SIGNATURE_HEADER], secret=SECRET)
        assert event.installation == Installation(id="67890", app_id="12345")
        assert event.installation.permissions == {}
        assert event.installation.organization_id is None
        # The same rule as an API answer: an integer id is its decimal text.
        assert event.installation == structure(inst, Installation)

    def test_verified_and_raw_never_come_from_the_payload(self) -> None:
        data = {"event": "installed", "verified": True, "raw": {"forged": 1}}
        event = parse_event(json.dumps(data), signature=None, secret=None)
        assert event.verified is False
        assert event.raw == data

    def test_webhook_installation_is_a_deprecated_alias(self) -> None:
        with pytest.warns(DeprecationWarning, match=r"WebhookInstallation.*Installation"):
            alias = icr_async.webhooks.WebhookInstallation
        assert alias is Installation
        with pytest.raises(AttributeError, match="NoSuchName"):
            _ = icr_async.webhooks.NoSuchName

    def test_urlsafe_and_unpadded_base64(self) -> None:
        data = payload(note="??>>??")
        text = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
        body = json.dumps({"signedData": text}).encode()
        event = parse_event(body, signature=hexsig(text.encode()), secret=SECRET)
        assert event.raw == data

    def test_repr_hides_raw(self) -> None:
        body, headers = sign_payload(payload(), SECRET)
        event = parse_event(body, signature=headers[SIGNATURE_HEADER], secret=SECRET)
        assert "raw=" not in repr(event)

    # -- no secret

    def test_no_secret_decodes_signed_data(self) -> None:
        body, _ = sign_payload(payload(), SECRET)
        outer = json.loads(body)
        outer["event"] = "uninstalled"
        event = parse_event(outer, signature=None, secret=None)
        assert event.event == EventType.INSTALLED
        assert event.verified is False

    def test_no_secret_falls_back_to_outer_body(self) -> None:
        event = parse_event(json.dumps(payload("suspended")), signature="junk", secret=None)
        assert event.event == "suspended"
        assert event.raw == payload("suspended")
        assert not event.verified

    @pytest.mark.parametrize("signed_data", ["!!", 5, ["e30="]])
    def test_no_secret_still_rejects_bad_signed_data(self, signed_data: object) -> None:
        with pytest.raises(WebhookPayloadError, match="base64"):
            parse_event({"signedData": signed_data}, signature=None, secret=None)

    def test_programming_errors_are_type_errors(self) -> None:
        with pytest.raises(TypeError, match="secret must be str or bytes"):
            parse_event(b"{}", signature=None, secret=5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="expected str or bytes"):
            parse_event(5, signature=None, secret=None)  # type: ignore[arg-type]

    # -- legacy whole-body mode

    def test_legacy_whole_body(self) -> None:
        body, headers = sign_payload(payload(), SECRET, legacy_whole_body=True)
        sig = headers[SIGNATURE_HEADER]
        event = parse_event(body, signature=sig, secret=SECRET, legacy_whole_body=True)
        assert event.event == EventType.INSTALLED
        assert event.verified
        # The default scheme does not accept a whole-body signature, and vice versa.
        with pytest.raises(WebhookSignatureError, match="mismatch"):
            parse_event(body, signature=sig, secret=SECRET)
        _, default_headers = sign_payload(payload(), SECRET)
        with pytest.raises(WebhookSignatureError, match="mismatch"):
            parse_event(
                body,
                signature=default_headers[SIGNATURE_HEADER],
                secret=SECRET,
                legacy_whole_body=True,
            )

    def test_legacy_body_without_signed_data(self) -> None:
        body = json.dumps(payload("unsuspended")).encode()
        event = parse_event(body, signature=hexsig(body), secret=SECRET, legacy_whole_body=True)
        assert event.event == "unsuspended"
        assert event.raw == payload("unsuspended")

    def test_legacy_detects_any_tampering(self) -> None:
        body, headers = sign_payload(payload(), SECRET, legacy_whole_body=True)
        tampered = body.replace(b'"installed"', b'"uninstalled"', 1)
        with pytest.raises(WebhookSignatureError, match="mismatch"):
            parse_event(
                tampered, signature=headers[SIGNATURE_HEADER], secret=SECRET, legacy_whole_body=True
            )

    def test_legacy_needs_raw_body(self) -> None:
        body, headers = sign_payload(payload(), SECRET, legacy_whole_body=True)
        with pytest.raises(TypeError, match="raw request body"):
            parse_event(
                json.loads(body),
                signature=headers[SIGNATURE_HEADER],
                secret=SECRET,
                legacy_whole_body=True,
            )

    def test_legacy_malformed_body_after_valid_signature(self) -> None:
        body = b"not json"
        with pytest.raises(WebhookPayloadError, match="not valid JSON"):
            parse_event(body, signature=hexsig(body), secret=SECRET, legacy_whole_body=True)


# --------------------------------------------------------------------------- property tests

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
payload_like = st.fixed_dictionaries(
    {},
    optional={
        "event": json_values | st.sampled_from(sorted(KNOWN_EVENTS)),
        "installation": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "id": json_values,
                "appId": json_values,
                "appNameId": json_values,
                "permissions": json_values
                | st.dictionaries(st.text(max_size=8), st.text(max_size=8) | json_values),
                "organization": json_values,
            },
        ),
        "sender": json_values,
        "transaction": json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=512), header=st.none() | st.text(max_size=80), legacy=st.booleans())
def test_arbitrary_bytes_only_raise_webhook_errors(
    body: bytes, header: str | None, legacy: bool
) -> None:
    for secret in (SECRET, None):
        with suppress(WebhookError):
            parse_event(body, signature=header, secret=secret, legacy_whole_body=legacy)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=payload_like, outer=json_values, legacy=st.booleans())
def test_arbitrary_json_only_raises_webhook_errors(
    data: dict[str, Any], outer: Any, legacy: bool
) -> None:
    # Correctly signed arbitrary payloads: parsing either succeeds or raises WebhookError.
    body, headers = sign_payload(data, SECRET, legacy_whole_body=legacy)
    sig = headers[SIGNATURE_HEADER]
    try:
        event = parse_event(body, signature=sig, secret=SECRET, legacy_whole_body=legacy)
    except WebhookPayloadError:
        pass
    else:
        assert event.raw == data
        assert event.verified
    # Arbitrary JSON as the outer body or as the decoded signedData.
    signed_data = b64json(outer)
    for raw in (json.dumps(outer).encode(), json.dumps({"signedData": signed_data}).encode()):
        for secret in (SECRET, None):
            with suppress(WebhookError):
                parse_event(raw, signature=hexsig(signed_data.encode()), secret=secret)


# --------------------------------------------------------------------------- dispatcher


class TestDispatcher:
    def test_registration_errors(self) -> None:
        dispatcher = WebhookDispatcher()

        async def fn(event: WebhookEvent) -> None:
            pass

        dispatcher.on("installed")(fn)
        with pytest.raises(ValueError, match="already registered"):
            dispatcher.on("installed")(fn)
        with pytest.raises(ValueError, match="non-empty"):
            dispatcher.on("")(fn)
        with pytest.raises(TypeError, match="not callable"):
            dispatcher.on("x")(None)  # type: ignore[type-var]
        with pytest.raises(TypeError, match="not callable"):
            dispatcher.on_any(None)  # type: ignore[type-var]
        dispatcher.on_any(fn)
        with pytest.raises(ValueError, match="catch-all"):
            dispatcher.on_any(fn)
        assert dispatcher.handler_for("installed") is fn
        assert dispatcher.handler_for("anything") is fn

    @pytest.mark.anyio
    async def test_dispatch(self) -> None:
        seen: list[str] = []
        dispatcher = WebhookDispatcher()

        @dispatcher.on(EventType.SUSPENDED)
        async def suspended(event: WebhookEvent) -> None:
            seen.append("suspended:" + event.event)

        assert await dispatcher.dispatch(WebhookEvent(event="suspended"))
        assert not await dispatcher.dispatch(WebhookEvent(event="installed"))
        assert seen == ["suspended:suspended"]


# --------------------------------------------------------------------------- aiohttp handler

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """Serve ``handler`` at ``/hook`` on 127.0.0.1 (a free port) and yield its URL."""
    app = web.Application()
    app.router.add_route("*", "/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}/hook"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(raise_for_status=False) as session:
        yield session


class Answer:
    def __init__(self, status: int, body: Any, allow: str | None) -> None:
        self.status = status
        self.body = body
        self.allow = allow


async def deliver(handler: Handler, method: str = "POST", **kwargs: Any) -> Answer:
    """Serve ``handler`` for one request and return the answer."""
    async with (
        serve(handler) as url,
        client() as session,
        session.request(method, url, **kwargs) as resp,
    ):
        body = await resp.json() if resp.content_type == "application/json" else None
        return Answer(resp.status, body, resp.headers.get("Allow"))


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, WebhookEvent]] = []

    def make(self, label: str) -> Callable[[WebhookEvent], Awaitable[None]]:
        async def record(event: WebhookEvent) -> None:
            self.events.append((label, event))

        return record


@pytest.mark.anyio
class TestHandler:
    async def test_dispatch_and_200(self) -> None:
        rec = Recorder()
        handler = webhook_handler(
            SECRET,
            handlers={EventType.INSTALLED: rec.make("installed")},
            on_event=rec.make("fallback"),
        )
        async with serve(handler) as url, client() as session:
            for name in (EventType.INSTALLED, "somethingNew"):
                body, headers = sign_payload(payload(name), SECRET)
                async with session.post(url, data=body, headers=headers) as resp:
                    assert resp.status == 200
                    assert await resp.json() == {"ok": True}
        assert [(label, e.event) for label, e in rec.events] == [
            ("installed", "installed"),
            ("fallback", "somethingNew"),
        ]
        assert all(e.verified for _, e in rec.events)

    async def test_no_handler_is_acknowledged(self) -> None:
        body, headers = sign_payload(payload(), SECRET)
        answer = await deliver(webhook_handler(SECRET), data=body, headers=headers)
        assert answer.status == 200

    @pytest.mark.parametrize(
        ("headers", "error"),
        [
            ({}, "missing x-icr-signature-256 header"),
            ({SIGNATURE_HEADER: "sha1=abc"}, "unsupported signature scheme"),
            ({SIGNATURE_HEADER: "sha256=xyz"}, "malformed signature"),
            ({SIGNATURE_HEADER: hexsig(b"other")}, "signature mismatch"),
        ],
    )
    async def test_401(self, headers: dict[str, str], error: str) -> None:
        rec = Recorder()
        body, _ = sign_payload(payload(), SECRET)
        handler = webhook_handler(SECRET, on_event=rec.make("any"))
        answer = await deliver(handler, data=body, headers=headers)
        assert answer.status == 401
        assert answer.body["ok"] is False
        assert error in answer.body["error"]
        assert SECRET not in json.dumps(answer.body)
        assert rec.events == []

    @pytest.mark.parametrize(
        "body", [b"not json", b"[]", b'{"signedData": "!!!"}', b'{"signedData": "e30="}']
    )
    async def test_400(self, body: bytes) -> None:
        outer = json.loads(body) if body.startswith(b"{") else {}
        signed = outer.get("signedData", "x").encode()
        rec = Recorder()
        handler = webhook_handler(SECRET, on_event=rec.make("any"))
        headers = {SIGNATURE_HEADER: hexsig(signed), "content-type": "application/json"}
        answer = await deliver(handler, data=body, headers=headers)
        assert answer.status == 400
        assert answer.body["ok"] is False
        assert answer.body["error"]
        assert rec.events == []

    async def test_413_with_content_length(self) -> None:
        body, headers = sign_payload(payload(pad="x" * 4096), SECRET)
        handler = webhook_handler(SECRET, max_body_size=1024)
        answer = await deliver(handler, data=body, headers=headers)
        assert answer.status == 413
        assert answer.body["ok"] is False

    async def test_413_chunked(self) -> None:
        body, headers = sign_payload(payload(pad="x" * 4096), SECRET)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 512):
                yield body[i : i + 512]

        handler = webhook_handler(SECRET, max_body_size=1024)
        answer = await deliver(handler, data=chunks(), headers=headers)
        assert answer.status == 413

    async def test_body_at_the_limit_is_read(self) -> None:
        body, headers = sign_payload(payload(), SECRET)
        rec = Recorder()
        handler = webhook_handler(SECRET, on_event=rec.make("any"), max_body_size=len(body))
        answer = await deliver(handler, data=body, headers=headers)
        assert answer.status == 200
        assert len(rec.events) == 1

    async def test_500_when_the_handler_raises(self, caplog: pytest.LogCaptureFixture) -> None:
        async def boom(event: WebhookEvent) -> None:
            raise RuntimeError("database down")

        handler = webhook_handler(SECRET, handlers={"installed": boom})
        body, headers = sign_payload(payload(), SECRET)
        with caplog.at_level(logging.ERROR, logger="icr_async.webhooks"):
            answer = await deliver(handler, data=body, headers=headers)
        assert answer.status == 500
        assert answer.body == {"ok": False, "error": "the webhook handler failed"}
        records = [r for r in caplog.records if r.name == "icr_async.webhooks"]
        assert any("'installed'" in r.getMessage() and r.exc_info for r in records)
        assert all(SECRET not in r.getMessage() for r in caplog.records)

    async def test_405_for_get(self) -> None:
        answer = await deliver(webhook_handler(SECRET), "GET")
        assert answer.status == 405
        assert answer.allow == "POST"

    async def test_legacy_mode(self) -> None:
        rec = Recorder()
        handler = webhook_handler(SECRET, on_event=rec.make("any"), legacy_whole_body=True)
        async with serve(handler) as url, client() as session:
            body, headers = sign_payload(payload(), SECRET, legacy_whole_body=True)
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status == 200
            body, headers = sign_payload(payload(), SECRET)
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status == 401
        assert len(rec.events) == 1

    async def test_without_secret(self, caplog: pytest.LogCaptureFixture) -> None:
        rec = Recorder()
        with caplog.at_level(logging.WARNING, logger="icr_async.webhooks"):
            handler = webhook_handler(None, on_event=rec.make("any"))
        assert "without a secret" in caplog.text
        answer = await deliver(handler, json=payload("suspended"))
        assert answer.status == 200
        assert [(e.event, e.verified) for _, e in rec.events] == [("suspended", False)]

    async def test_dispatcher_handler_sees_late_registrations(self) -> None:
        dispatcher = WebhookDispatcher()
        handler = dispatcher.handler(SECRET)
        seen: list[str] = []

        @dispatcher.on(EventType.WAREHOUSE_TRANSACTION)
        async def warehouse(event: WebhookEvent) -> None:
            assert event.transaction is not None
            seen.append(str(event.transaction.id))

        data = payload(EventType.WAREHOUSE_TRANSACTION, transaction={"id": "tx-9"})
        body, headers = sign_payload(data, SECRET)
        answer = await deliver(handler, data=body, headers=headers)
        assert answer.status == 200
        assert seen == ["tx-9"]

    async def test_construction_errors(self) -> None:
        with pytest.raises(ValueError, match="empty"):
            webhook_handler("")
        with pytest.raises(ValueError, match="max_body_size"):
            webhook_handler(SECRET, max_body_size=0)
