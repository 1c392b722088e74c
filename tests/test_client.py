"""The app endpoints of AsyncICRClient, against the real emulator on 127.0.0.1."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import pytest

from icr_async import (
    AsyncICRClient,
    AuthenticationError,
    ClientClosedError,
    ConfigurationError,
    InvalidArgumentError,
    NotFoundError,
    OrganizationType,
    PaginationError,
    RequestEvent,
    ResponseEvent,
    Token,
    UnsupportedAPIVersionError,
)
from icr_async.testing import EmulatorServer, ICREmulator, ManualClock

pytestmark = pytest.mark.anyio

TOKEN_CHARS = set("0123456789abcdef")


def _is_crs_token(value: str) -> bool:
    return value.startswith("crs_") and len(value) == 52 and set(value[4:]) <= TOKEN_CHARS


async def test_create_app_token(
    client: AsyncICRClient, emulator: ICREmulator, clock: ManualClock
) -> None:
    token = await client.create_app_token()
    assert isinstance(token, Token)
    assert _is_crs_token(token.token)
    assert token.app_id == client.app_id
    assert token.installation_id is None
    assert token.expires_at.tzinfo is datetime.timezone.utc
    assert token.expires_at.timestamp() == pytest.approx(clock() + emulator.app_token_ttl, abs=2)
    assert token.minted_at is not None
    assert token.minted_at.timestamp() == pytest.approx(clock(), abs=1)
    # What ICR sent besides is kept: its id and its own (server-clock) times.
    assert token.id
    assert token.created_at is not None
    assert token.updated_at is not None
    assert token.is_active is True
    assert token.token not in repr(token)
    assert "crs_…" in repr(token)
    assert emulator.stats.app_token_mints == 1


async def test_create_installation_token(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, clock: ManualClock
) -> None:
    inst = emulator.installations(app_id)[0]
    token = await client.create_installation_token(inst["id"])
    assert isinstance(token, Token)
    assert _is_crs_token(token.token)
    assert token.installation_id == inst["id"]
    assert token.organization_id == inst["organization"]["id"]
    assert token.expires_at.timestamp() == pytest.approx(clock() + 7200, abs=2)
    assert token.permissions["organization_info"] == "VIEW"
    assert token.app_id == client.app_id
    assert token.id
    assert emulator.stats.mints[inst["id"]] == 1


@pytest.mark.parametrize("skew", [1800.0, -1800.0])
async def test_minted_and_cached_tokens_are_one_type_with_one_expiry(
    make_client: Any, emulator: ICREmulator, app_id: str, clock: ManualClock, skew: float
) -> None:
    # The server's clock is half an hour off: both ways of getting a token place its expiry
    # on this machine's clock (7200 s from now), and carry the same facts.
    emulator.skew = skew
    client: AsyncICRClient = make_client()
    inst = emulator.installations(app_id)[1]["id"]
    minted = await client.create_installation_token(inst)
    cached = await client.installation(inst).get_token()
    app = await client.create_app_token()
    for token in (minted, cached, app):
        assert type(token) is Token
        assert token.expires_at.tzinfo is datetime.timezone.utc
    assert minted.expires_at.timestamp() - clock() == pytest.approx(7200, abs=2)
    assert cached.expires_at.timestamp() - clock() == pytest.approx(7200, abs=2)
    assert app.expires_at.timestamp() - clock() == pytest.approx(emulator.app_token_ttl, abs=2)
    assert minted.token != cached.token
    for name in ("installation_id", "organization_id", "permissions", "app_id", "is_active"):
        assert getattr(minted, name) == getattr(cached, name), name
    # ICR's own times stay on the server's clock, as sent.
    assert cached.created_at is not None
    assert cached.created_at.timestamp() - clock() == pytest.approx(skew, abs=2)


async def test_every_request_carries_version_user_agent_and_bearer(
    make_client: Any, emulator: ICREmulator, app_id: str
) -> None:
    seen: list[RequestEvent] = []
    answers: list[ResponseEvent] = []
    client: AsyncICRClient = make_client(on_request=seen.append, on_response=answers.append)
    await client.get_installation(emulator.installations(app_id)[0]["id"])
    assert len(seen) == 1
    headers = {k.lower(): v for k, v in seen[0].headers.items()}
    assert headers["x-icr-api-version"] == "2023-06-16"
    assert headers["user-agent"].startswith("icr-async/")
    assert headers["authorization"] == "Bearer <redacted>"
    assert answers[0].status == 200
    assert answers[0].request_id


async def test_jwt_is_signed_once_and_reused(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, clock: ManualClock
) -> None:
    ids = [i["id"] for i in emulator.installations(app_id)[:5]]
    for inst_id in ids:
        await client.get_installation(inst_id)
    assert client.jwt_signatures == 1
    clock.advance(7 * 60)  # still over a minute left: reused
    await client.get_installation(ids[0])
    assert client.jwt_signatures == 1
    clock.advance(2 * 60)  # under a minute left: re-signed before sending
    await client.get_installation(ids[0])
    assert client.jwt_signatures == 2
    assert sum(emulator.stats.jwt_rejections.values()) == 0


async def test_jwt_from_unknown_key_is_refused_by_the_server(
    make_client: Any, other_private_key_pem: str, emulator: ICREmulator
) -> None:
    client: AsyncICRClient = make_client(private_key=other_private_key_pem)
    with pytest.raises(AuthenticationError) as info:
        await client.create_app_token()
    err = info.value
    assert err.status == 401
    assert err.method == "POST"
    assert err.path == "/app/accessTokens"
    assert err.request_id
    assert "signature" in err.server_message.lower()
    assert sum(emulator.stats.jwt_rejections.values()) >= 1


async def test_unknown_app_id_is_refused(make_client: Any) -> None:
    client: AsyncICRClient = make_client(app_id="00000000-0000-0000-0000-000000000000")
    with pytest.raises(AuthenticationError):
        await client.list_installations()


async def test_revoke_token_then_it_no_longer_works(
    client: AsyncICRClient, emulator: ICREmulator
) -> None:
    token = await client.create_app_token()
    assert await client.revoke_token(token) is True
    assert emulator.stats.revocations == 1
    # The server refuses the revoked token (401): revoking again says so, as the scoped
    # ``revoke()`` does, instead of raising.
    assert await client.revoke_token(token.token) is False
    assert emulator.stats.revocations == 1


async def test_a_masked_token_is_never_sent_as_a_credential(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst = emulator.installations(app_id)[0]
    token = await client.installation(inst["id"]).get_token()
    minted = await client.create_installation_token(inst["id"])
    for value in (token, minted):
        # str() is masked for logs; formatting into a header is refused, not sent masked.
        assert "…" in str(value)
        assert value.token not in str(value)
        with pytest.raises(InvalidArgumentError, match=r"token\.token"):
            f"Bearer {value}"
    with pytest.raises(InvalidArgumentError, match="masked"):
        await client.revoke_token(str(token))
    assert emulator.stats.revocations == 0


async def test_revoke_rejects_blank_token(client: AsyncICRClient) -> None:
    with pytest.raises(InvalidArgumentError):
        await client.revoke_token("  ")


async def test_list_installations_page(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    page = await client.list_installations(limit=10, page=0)
    assert len(page) == 10
    assert page.pagination is not None
    assert page.pagination.total == 25
    assert page.pagination.page_count == 3
    assert page.pagination.next_page == 1
    assert [i.id for i in page] == [i["id"] for i in emulator.installations(app_id)[:10]]
    last = await client.list_installations(limit=10, page=2)
    assert len(last) == 5
    assert last.pagination is not None
    assert last.pagination.next_page is None
    first = page.items[0]
    assert first.organization is not None
    assert first.organization.full_name
    assert first.permissions.can_read("organization_info")


@pytest.mark.parametrize(("page_size", "requests"), [(10, 3), (25, 1), (5, 5), (100, 1), (1, 25)])
async def test_iterate_all_installations(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, page_size: int, requests: int
) -> None:
    got = [inst.id async for inst in client.iter_installations(page_size=page_size)]
    assert got == [i["id"] for i in emulator.installations(app_id)]
    assert emulator.stats.requests[("GET", "list_installations")] == requests


async def test_iterate_exact_multiple_with_absent_end_keys(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    emulator.page_end_style = "absent"
    for _ in range(5):  # 30 installations: an exact multiple of 10
        emulator.add_installation(app_id)
    got = [inst.id async for inst in client.iter_installations(page_size=10)]
    assert len(got) == 30
    assert len(set(got)) == 30
    assert emulator.stats.requests[("GET", "list_installations")] == 3


async def test_iterate_no_installations(
    make_client: Any, emulator: ICREmulator, other_private_key_pem: str
) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(other_private_key_pem.encode(), password=None)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    empty_app = emulator.add_app(public)
    client: AsyncICRClient = make_client(app_id=empty_app, private_key=other_private_key_pem)
    assert [i async for i in client.iter_installations()] == []
    page = await client.list_installations()
    assert page.items == ()
    assert page.total == 0


async def test_iterate_stops_on_a_server_that_repeats_pages(
    client: AsyncICRClient, emulator: ICREmulator
) -> None:
    emulator.repeat_pages = True
    seen: list[str] = []

    async def consume() -> None:
        async for inst in client.iter_installations(page_size=10):
            seen.append(inst.id)

    with pytest.raises(PaginationError, match="same page"):
        await consume()
    assert len(seen) == 10  # the first page, then the repeat is caught
    assert emulator.stats.requests[("GET", "list_installations")] == 2


async def test_get_installation(client: AsyncICRClient, emulator: ICREmulator, app_id: str) -> None:
    raw = emulator.installations(app_id)[3]
    inst = await client.get_installation(raw["id"])
    assert inst.id == raw["id"]
    assert inst.app_id == app_id
    assert inst.organization is not None
    assert inst.organization.id == raw["organization"]["id"]
    assert isinstance(inst.created_at, datetime.datetime)
    assert inst.created_at.tzinfo is not None


async def test_get_unknown_installation_is_not_found(client: AsyncICRClient) -> None:
    with pytest.raises(NotFoundError) as info:
        await client.get_installation("11111111-2222-3333-4444-555555555555")
    err = info.value
    assert err.status == 404
    assert err.path == "/app/installations/11111111-2222-3333-4444-555555555555"
    assert err.request_id is not None
    assert err.request_id in str(err)


@pytest.mark.parametrize(
    "bad",
    ["../token", "a/b", "%2e%2e", "", " ", "ünïcode", "a b", "x" * 200, "..", True, 1.5, None],
)
async def test_bad_installation_ids_never_reach_the_server(
    client: AsyncICRClient, emulator: ICREmulator, bad: Any
) -> None:
    with pytest.raises(InvalidArgumentError):
        await client.get_installation(bad)
    with pytest.raises(InvalidArgumentError):
        await client.create_installation_token(bad)
    with pytest.raises(InvalidArgumentError):
        client.installation(bad)
    assert emulator.stats.total_requests == 0


@pytest.mark.parametrize(
    ("limit", "page"), [(0, 0), (-1, 0), (10, -1), (1001, 0), ("10", 0), (10, 1.0), (True, 0)]
)
async def test_page_arguments_are_checked(
    client: AsyncICRClient, emulator: ICREmulator, limit: Any, page: Any
) -> None:
    with pytest.raises(InvalidArgumentError):
        await client.list_installations(limit=limit, page=page)
    with pytest.raises(InvalidArgumentError):
        client.iter_installations(page_size=limit, start_page=page)
    assert emulator.stats.total_requests == 0


async def test_create_user_organization(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    created = await client.create_user_organization(
        email="ada@example.org",
        full_name="Ada Lovelace",
        organization_name="Analytical Offsets",
        organization_type=OrganizationType.PROJECT_DEVELOPER,
        country_code="is",
    )
    assert created.installation.id
    assert created.organization is not None
    assert created.organization.full_name == "Analytical Offsets"
    assert created.organization.country_code == "IS"
    listed = await client.get_installation(created.installation.id)
    assert listed.id == created.installation.id
    assert len(emulator.installations(app_id)) == 26


@pytest.mark.parametrize(
    "kwargs",
    [
        {"email": "not-an-email", "organization_name": "X", "organization_type": "other"},
        {"email": "a@b.c", "organization_name": " ", "organization_type": "other"},
        {"email": "a@b.c", "organization_name": "X", "organization_type": ""},
        {
            "email": "a@b.c",
            "organization_name": "X",
            "organization_type": "other",
            "country_code": "1S",
        },
    ],
)
async def test_create_user_organization_checks_input(
    client: AsyncICRClient, emulator: ICREmulator, kwargs: Any
) -> None:
    with pytest.raises(InvalidArgumentError):
        await client.create_user_organization(**kwargs)
    assert emulator.stats.total_requests == 0


async def test_server_validation_error_with_list_message(client: AsyncICRClient) -> None:
    from icr_async import BadRequestError

    with pytest.raises(BadRequestError) as info:
        await client.request(
            "POST", "/app/create/user/organization", json={"user": {}, "organization": {}}
        )
    assert len(info.value.messages) >= 2
    assert all(m in info.value.server_message for m in info.value.messages)


async def test_unsupported_api_version(make_client: Any) -> None:
    client: AsyncICRClient = make_client(api_version="2099-01-01")
    with pytest.raises(UnsupportedAPIVersionError) as info:
        await client.list_installations()
    assert info.value.status == 400


async def test_generic_request_with_app_jwt(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    data = await client.request("GET", "/app/installations", params={"limit": 2, "page": 1})
    assert [i["id"] for i in data["installations"]] == [
        i["id"] for i in emulator.installations(app_id)[2:4]
    ]


@pytest.mark.parametrize(
    "path",
    [
        "app/installations",
        "//evil.example/x",
        "https://evil.example/",
        "/a/../b",
        "/a b",
        "/a/./b",
        "/a/%2e%2E/b",
        "/a\\b",
        "/a\tb",
        "/a/..",
    ],
)
async def test_generic_request_refuses_bad_paths(client: AsyncICRClient, path: str) -> None:
    with pytest.raises(InvalidArgumentError):
        await client.request("GET", path)


async def test_generic_request_refuses_bad_method(client: AsyncICRClient) -> None:
    with pytest.raises(InvalidArgumentError):
        await client.request("BREW", "/app/installations")


async def test_closed_client_refuses_calls(make_client: Any) -> None:
    client: AsyncICRClient = make_client()
    async with client:
        await client.list_installations()
    assert client.closed
    with pytest.raises(ClientClosedError):
        await client.list_installations()
    await client.aclose()  # idempotent


async def test_connection_refused_is_a_transport_error(
    private_key_pem: str, app_id: str, fake_sleep: Any
) -> None:
    import socket

    from icr_async import RetryPolicy, TransportError

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nobody listens on this port now
    async with AsyncICRClient(
        app_id,
        private_key_pem,
        base_url=f"http://127.0.0.1:{port}",
        env=False,
        retry=RetryPolicy(attempts=2),
        sleep=fake_sleep,
    ) as client:
        with pytest.raises(TransportError) as info:
            await client.list_installations()
    assert "cannot connect" in str(info.value)
    assert fake_sleep.calls  # one retry was made, without real waiting


def test_configuration_errors_at_construction(private_key_pem: str) -> None:
    with pytest.raises(ConfigurationError, match="app_id is empty"):
        AsyncICRClient("  ", private_key_pem, env=False)
    with pytest.raises(ConfigurationError, match="no app id"):
        AsyncICRClient(None, private_key_pem, env=False)
    with pytest.raises(ConfigurationError, match="no private key"):
        AsyncICRClient("app", env=False)
    with pytest.raises(ConfigurationError, match="scheme"):
        AsyncICRClient("app", private_key_pem, base_url="api.carbonregistry.com", env=False)
    with pytest.raises(ConfigurationError, match="clear"):
        AsyncICRClient("app", private_key_pem, base_url="http://api.carbonregistry.com", env=False)
    with pytest.raises(ConfigurationError, match="api_version"):
        AsyncICRClient("app", private_key_pem, api_version="v1", env=False)
    with pytest.raises(ConfigurationError, match="not both"):
        AsyncICRClient(
            "app", private_key_pem, base_url="https://x.example", sandbox=True, env=False
        )


def test_base_url_choices(private_key_pem: str) -> None:
    assert (
        AsyncICRClient("a", private_key_pem, env=False).base_url == "https://api.carbonregistry.com"
    )
    assert (
        AsyncICRClient("a", private_key_pem, sandbox=True, env=False).base_url
        == "https://sandbox-api.carbonregistry.com"
    )
    assert (
        AsyncICRClient("a", private_key_pem, base_url="https://x.example/", env=False).base_url
        == "https://x.example"
    )
    allowed = AsyncICRClient(
        "a", private_key_pem, base_url="http://x.example", allow_insecure_http=True, env=False
    )
    assert allowed.base_url == "http://x.example"


def test_credentials_from_environment(
    private_key_pem: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICR_APP_ID", "env-app")
    monkeypatch.setenv("ICR_PRIVATE_KEY", private_key_pem.replace("\n", "\\n"))
    monkeypatch.setenv("ICR_BASE_URL", "http://127.0.0.1:9")
    client = AsyncICRClient()
    assert client.app_id == "env-app"
    assert client.base_url == "http://127.0.0.1:9"
    monkeypatch.delenv("ICR_PRIVATE_KEY")
    key_file = tmp_path / "key.pem"
    key_file.write_text(private_key_pem)
    monkeypatch.setenv("ICR_PRIVATE_KEY_PATH", str(key_file))
    assert AsyncICRClient().key_fingerprint == client.key_fingerprint


def test_repr_and_errors_never_show_the_key(
    private_key_pem: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="icr_async")
    client = AsyncICRClient("app", private_key_pem, env=False)
    body = private_key_pem.split("\n")[1]
    assert body not in repr(client)
    assert body not in repr(client._key)
    assert all(body not in r.getMessage() for r in caplog.records)


async def test_two_clients_share_nothing(
    make_client: Any, emulator: ICREmulator, app_id: str, server: EmulatorServer
) -> None:
    inst = emulator.installations(app_id)[0]["id"]
    a: AsyncICRClient = make_client()
    b: AsyncICRClient = make_client()
    await a.installation(inst).get_token()
    await b.installation(inst).get_token()
    assert emulator.stats.mints[inst] == 2
