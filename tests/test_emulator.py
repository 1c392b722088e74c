"""The ICR emulator, exercised over real HTTP with raw aiohttp and hand-signed JWTs."""

from __future__ import annotations

import asyncio
import base64
import datetime
import email.utils
import hashlib
import hmac
import json
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey
from multidict import CIMultiDictProxy

import icr_async.testing as testing_pkg
from icr_async.testing import (
    VARIANTS,
    EmulatorApp,
    EmulatorServer,
    EmulatorVariant,
    Fault,
    ICREmulator,
    ManualClock,
    generate_private_key_pem,
)
from icr_async.testing._variants import options_of

START = 1_700_000_000.0
TOKEN_RE = re.compile(r"crs_[0-9a-f]{48}")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def key_pem() -> str:
    return generate_private_key_pem()


@pytest.fixture(scope="session")
def other_key_pem() -> str:
    return generate_private_key_pem()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def emulator(clock: ManualClock, key_pem: str) -> ICREmulator:
    emu = ICREmulator(clock=clock, seed=7)
    emu.create_app(3, private_key_pem=key_pem)
    return emu


@pytest.fixture
def app(emulator: ICREmulator) -> EmulatorApp:
    return emulator.default_app


@pytest.fixture
async def server(emulator: ICREmulator) -> AsyncIterator[EmulatorServer]:
    async with emulator.serve() as srv:
        yield srv


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# ---------------------------------------------------------------------------- helpers


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign(
    app: EmulatorApp,
    now: float,
    *,
    iat: float = -60,
    exp: float = 540,
    key_pem: str | None = None,
    iss: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """An app JWT with iat/exp relative to ``now`` (and ``extra`` claims)."""
    claims = {
        "iss": app.app_id if iss is None else iss,
        "iat": int(now + iat),
        "exp": int(now + exp),
        **(extra or {}),
    }
    key = RSAKey.import_key(app.private_key_pem if key_pem is None else key_pem)
    return jwt.encode({"alg": "RS256"}, claims, key)


def unsigned(app: EmulatorApp, now: float, header: Mapping[str, Any], secret: bytes = b"") -> str:
    claims = {"iss": app.app_id, "iat": int(now - 60), "exp": int(now + 540)}
    signing_input = b64(json.dumps(dict(header)).encode()) + "." + b64(json.dumps(claims).encode())
    signature = b""
    if secret:
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


Result = tuple[int, Any, "CIMultiDictProxy[str]"]


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    data: bytes | None = None,
    params: Mapping[str, str] | None = None,
) -> Result:
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    async with http.request(
        method, url, headers=all_headers, json=json_body, data=data, params=params
    ) as response:
        raw = await response.read()
        body = json.loads(raw) if raw and response.content_type == "application/json" else raw
        return response.status, body, response.headers


async def mint(
    http: aiohttp.ClientSession,
    server: EmulatorServer,
    app: EmulatorApp,
    clock: ManualClock,
    installation_id: str,
) -> dict[str, Any]:
    status, body, _ = await call(
        http,
        "POST",
        f"{server.url}/app/installations/{installation_id}/accessTokens",
        token=sign(app, clock()),
        json_body={},
    )
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def first_installation(emulator: ICREmulator, app: EmulatorApp) -> dict[str, Any]:
    return emulator.installations(app.app_id)[0]


# ---------------------------------------------------------------------- public surface


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order (as tests/test_public_api.py): CONSTANTS, Classes, the rest.
    group = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return group, name


def test_all_is_sorted_and_complete() -> None:
    assert testing_pkg.__all__ == sorted(testing_pkg.__all__, key=_isort_key)
    for name in testing_pkg.__all__:
        assert getattr(testing_pkg, name).__doc__


def test_generate_private_key_pem_is_pkcs8() -> None:
    pem = generate_private_key_pem(1024)
    assert pem.startswith("-----BEGIN PRIVATE KEY-----\n")
    assert pem.rstrip().endswith("-----END PRIVATE KEY-----")


def test_app_repr_hides_private_key(app: EmulatorApp) -> None:
    assert "PRIVATE" not in repr(app)
    assert app.app_id in repr(app)


def test_data_is_deterministic_per_seed(key_pem: str) -> None:
    def build(seed: int) -> tuple[str, list[dict[str, Any]]]:
        emu = ICREmulator(seed=seed)
        app = emu.create_app(2, private_key_pem=key_pem)
        return app.app_id, emu.installations(app.app_id)

    assert build(3) == build(3)
    assert build(3)[0] != build(4)[0]


def test_installation_shape(emulator: ICREmulator, app: EmulatorApp) -> None:
    inst = first_installation(emulator, app)
    assert list(inst) == [
        "id",
        "createdAt",
        "updatedAt",
        "permissions",
        "appNameId",
        "appId",
        "accessTokensUrl",
        "organization",
    ]
    assert inst["appId"] == app.app_id
    assert inst["appNameId"] == app.app_name_id
    assert inst["permissions"]["organization_info"] == "VIEW"
    assert inst["permissions"]["organization_inventory"] == "WRITE"
    assert inst["accessTokensUrl"].endswith(f"/app/installations/{inst['id']}/accessTokens")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", inst["createdAt"])
    org = inst["organization"]
    for key in (
        "id",
        "fullName",
        "countryCode",
        "type",
        "isPublic",
        "createdAt",
        "updatedAt",
        "url",
        "logo",
        "website",
        "city",
        "zip",
        "physicalAddress",
        "registrationNumber",
        "organizationIndustries",
    ):
        assert key in org
    assert org["type"] in {
        "projectProponent",
        "projectDeveloper",
        "marketParticipant",
        "validationBody",
        "other",
    }


def test_add_installation_options(
    emulator: ICREmulator, app: EmulatorApp, other_key_pem: str
) -> None:
    inst = emulator.add_installation(
        app.app_id, permissions={"organization_info": "VIEW"}, organization={"fullName": "Acme"}
    )
    assert inst["permissions"] == {"organization_info": "VIEW"}
    assert inst["organization"]["fullName"] == "Acme"
    # Naming an existing organization installs a second app on the same organization.
    other = emulator.add_app(other_key_pem)
    shared = emulator.add_installation(other, organization={"id": inst["organization"]["id"]})
    assert shared["organization"] == inst["organization"]
    with pytest.raises(KeyError):
        emulator.add_installation("no-such-app")
    with pytest.raises(ValueError, match="already exists"):
        emulator.add_app(app.private_key_pem, app_id=app.app_id)


def test_remove_unknown_installation_raises(emulator: ICREmulator) -> None:
    with pytest.raises(KeyError):
        emulator.remove_installation("nope")


def test_default_app_requires_create_app() -> None:
    with pytest.raises(LookupError):
        _ = ICREmulator().default_app


def test_invalid_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="page_end_style"):
        ICREmulator(page_end_style="missing")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_page_limit"):
        ICREmulator(max_page_limit=0)


def test_fault_validation() -> None:
    with pytest.raises(ValueError, match="action"):
        Fault(action="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="probability"):
        Fault(probability=1.5)
    with pytest.raises(ValueError, match="after"):
        Fault(after=-1)


@pytest.mark.anyio
async def test_serve_refuses_non_loopback(emulator: ICREmulator) -> None:
    with pytest.raises(ValueError, match="loopback"):
        async with emulator.serve("0.0.0.0"):
            pass  # pragma: no cover


# -------------------------------------------------------------------------------- JWT


@pytest.mark.anyio
async def test_jwt_accepted_and_app_token_minted(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    status, body, headers = await call(
        http, "POST", f"{server.url}/app/accessTokens", token=sign(app, clock())
    )
    assert status == 200
    assert TOKEN_RE.fullmatch(body["token"])
    assert body["isActive"] is True
    assert body["permissions"] == {}
    assert body["appId"] == app.app_id
    assert body["expiresAt"] == "2023-11-14T23:13:20.000Z"  # START + 3600
    assert "installationId" not in body
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert emulator.stats.app_token_mints == 1
    assert emulator.stats.requests[("POST", "create_app_token")] == 1


@pytest.mark.anyio
async def test_jwt_leeway_accepts_slightly_future_iat(
    app: EmulatorApp, server: EmulatorServer, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    token = sign(app, clock(), iat=20, exp=300)
    status, _, _ = await call(http, "POST", f"{server.url}/app/accessTokens", token=token)
    assert status == 200


@pytest.mark.parametrize(
    ("kind", "reason", "message"),
    [
        ("expired", "expired", "JWT expired"),
        ("future", "iat_in_future", "JWT issued in the future (iat)"),
        ("exp_too_far", "exp_too_far", "JWT exp must be at most 10 minutes in the future"),
        ("signature", "signature", "Invalid JWT signature"),
        ("unknown_iss", "unknown_app", "Unknown app (iss)"),
        ("alg_none", "algorithm", "Unsupported JWT algorithm 'none': RS256 is required"),
        ("alg_hs256", "algorithm", "Unsupported JWT algorithm 'HS256': RS256 is required"),
        ("malformed", "malformed", "Malformed JWT"),
        ("garbage", "malformed", "Malformed JWT"),
        ("float_claims", "claims", "JWT claims iat and exp must be integers"),
        ("missing", "missing", "Missing bearer token"),
    ],
)
@pytest.mark.anyio
async def test_jwt_rejections(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
    other_key_pem: str,
    kind: str,
    reason: str,
    message: str,
) -> None:
    now = clock()
    token: str | None
    if kind == "expired":
        token = sign(app, now, iat=-601, exp=-1)
    elif kind == "future":
        token = sign(app, now, iat=100, exp=400)
    elif kind == "exp_too_far":
        token = sign(app, now, iat=-60, exp=900)
    elif kind == "signature":
        token = sign(app, now, key_pem=other_key_pem)
    elif kind == "unknown_iss":
        token = sign(app, now, iss="00000000-0000-4000-8000-000000000000")
    elif kind == "alg_none":
        token = unsigned(app, now, {"alg": "none", "typ": "JWT"})
    elif kind == "alg_hs256":
        token = unsigned(app, now, {"alg": "HS256", "typ": "JWT"}, secret=b"public-key-text")
    elif kind == "malformed":
        token = "crs_" + "0" * 48
    elif kind == "garbage":
        token = "a.b.c"
    elif kind == "float_claims":
        claims = {"iss": app.app_id, "iat": now - 60.5, "exp": now + 500.5}
        token = jwt.encode({"alg": "RS256"}, claims, RSAKey.import_key(app.private_key_pem))
    else:
        token = None
    status, body, _ = await call(http, "POST", f"{server.url}/app/accessTokens", token=token)
    assert status == 401
    assert body == {"statusCode": 401, "message": message, "error": "Unauthorized"}
    assert emulator.stats.jwt_rejections == {reason: 1}
    assert emulator.stats.app_token_mints == 0


@pytest.mark.anyio
async def test_cached_jwt_still_expires(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    token = sign(app, clock())
    url = f"{server.url}/app/accessTokens"
    for _ in range(3):
        assert (await call(http, "POST", url, token=token))[0] == 200
    clock.advance(539)
    assert (await call(http, "POST", url, token=token))[0] == 200
    clock.advance(1)
    status, body, _ = await call(http, "POST", url, token=token)
    assert (status, body["message"]) == (401, "JWT expired")
    # The server's clock matters, not the client's: a skew behind makes it valid again.
    emulator.skew = -10
    assert (await call(http, "POST", url, token=token))[0] == 200


@pytest.mark.anyio
async def test_key_rotation(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
    other_key_pem: str,
) -> None:
    url = f"{server.url}/app/accessTokens"
    old_token = sign(app, clock())
    new_token = sign(app, clock(), key_pem=other_key_pem)
    assert (await call(http, "POST", url, token=old_token))[0] == 200
    assert (await call(http, "POST", url, token=new_token))[0] == 401
    emulator.add_app_key(app.app_id, other_key_pem)  # a private PEM is accepted too
    assert (await call(http, "POST", url, token=new_token))[0] == 200
    assert (await call(http, "POST", url, token=old_token))[0] == 200
    emulator.remove_app_key(
        app.app_id, RSAKey.import_key(app.private_key_pem).as_pem(private=False)
    )
    status, body, _ = await call(http, "POST", url, token=old_token)
    assert (status, body["message"]) == (401, "Invalid JWT signature")
    assert (await call(http, "POST", url, token=new_token))[0] == 200
    with pytest.raises(KeyError):
        emulator.remove_app_key(app.app_id, app.private_key_pem)


# ---------------------------------------------------------------------- version header


@pytest.mark.anyio
async def test_version_header(
    app: EmulatorApp, server: EmulatorServer, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    url = f"{server.url}/app/accessTokens"
    ok = await call(
        http, "POST", url, token=sign(app, clock()), headers={"X-ICR-Api-Version": "2023-06-16"}
    )
    assert ok[0] == 200
    # Checked before authentication: no token at all still gets the 400.
    status, body, _ = await call(http, "POST", url, headers={"x-icr-api-version": "2020-01-01"})
    assert status == 400
    assert body == {
        "statusCode": 400,
        "message": "Unsupported API version: 2020-01-01",
        "error": "Bad Request",
    }


# ----------------------------------------------------------------- installation routes


@pytest.mark.anyio
async def test_mint_installation_token(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    inst = first_installation(emulator, app)
    url = f"{server.url}/app/installations/{inst['id']}/accessTokens"
    variants: list[dict[str, Any]] = [{}, {"json_body": {}}, {"data": b""}]
    for body_kwargs in variants:
        status, body, _ = await call(http, "POST", url, token=sign(app, clock()), **body_kwargs)
        assert status == 200
        assert TOKEN_RE.fullmatch(body["token"])
        assert body["installationId"] == inst["id"]
        assert body["organizationId"] == inst["organization"]["id"]
        assert body["permissions"] == inst["permissions"]
        assert body["appId"] == app.app_id
        assert body["expiresAt"] == "2023-11-15T00:13:20.000Z"  # START + 7200
        assert set(body) >= {"id", "createdAt", "updatedAt", "isActive"}
    assert emulator.stats.mints == {inst["id"]: 3}
    status, body, _ = await call(http, "POST", url, token=sign(app, clock()), data=b"[1]")
    assert status == 400


@pytest.mark.anyio
async def test_installation_of_other_app_is_404(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
    other_key_pem: str,
) -> None:
    other = emulator.create_app(1, private_key_pem=other_key_pem)
    foreign = emulator.installations(other.app_id)[0]["id"]
    token = sign(app, clock())
    for method, path in (
        ("POST", f"/app/installations/{foreign}/accessTokens"),
        ("GET", f"/app/installations/{foreign}"),
        ("POST", "/app/installations/unknown/accessTokens"),
        ("GET", "/app/installations/unknown"),
    ):
        status, body, _ = await call(http, method, server.url + path, token=token)
        assert status == 404
        assert body["error"] == "Not Found"
    # The other app sees only its own installation.
    _, body, _ = await call(
        http, "GET", f"{server.url}/app/installations", token=sign(other, clock())
    )
    assert [i["id"] for i in body["installations"]] == [foreign]


@pytest.mark.anyio
async def test_list_and_get_installations(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    token = sign(app, clock())
    status, body, _ = await call(http, "GET", f"{server.url}/app/installations", token=token)
    assert status == 200
    assert body["pagination"] == {
        "total": 3,
        "currentPage": 0,
        "pageCount": 1,
        "nextPage": None,
        "prevPage": None,
    }
    assert body["installations"] == emulator.installations(app.app_id)
    first = body["installations"][0]
    assert first["accessTokensUrl"] == f"{server.url}/app/installations/{first['id']}/accessTokens"
    status, got, _ = await call(
        http, "GET", f"{server.url}/app/installations/{first['id']}", token=token
    )
    assert status == 200
    assert got == first
    assert emulator.stats.requests[("GET", "get_installation")] == 1


@pytest.mark.anyio
async def test_create_user_organization(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    request = {
        "user": {"email": "ada@example.com", "fullName": "Ada"},
        "organization": {
            "fullName": "Ada Carbon",
            "type": "marketParticipant",
            "countryCode": "IS",
        },
    }
    url = f"{server.url}/app/create/user/organization"
    status, body, _ = await call(http, "POST", url, token=sign(app, clock()), json_body=request)
    assert status == 200  # the docs' reading; post_status=201 is the other
    assert body["user"]["email"] == "ada@example.com"
    assert body["user"]["fullName"] == "Ada"
    org = body["organization"]
    assert (org["fullName"], org["type"], org["countryCode"]) == (
        "Ada Carbon",
        "marketParticipant",
        "IS",
    )
    inst = body["installation"]
    assert inst["organization"] == org
    assert inst["appId"] == app.app_id
    assert inst["createdAt"] == "2023-11-14T22:13:20.000Z"
    assert inst["id"] in [i["id"] for i in emulator.installations(app.app_id)]
    token = await mint(http, server, app, clock, inst["id"])
    assert token["organizationId"] == org["id"]
    # App routes are not credit actions: not recorded in posts.
    assert not emulator.stats.posts


@pytest.mark.parametrize(
    ("request_body", "messages"),
    [
        (
            {},
            ["user must be an object", "organization must be an object"],
        ),
        (
            {
                "user": {"email": "nope", "fullName": 3},
                "organization": {"fullName": "", "type": "bank", "countryCode": "iceland"},
            },
            [
                "user.email must be an email",
                "user.fullName must be a string",
                "organization.fullName should not be empty",
                "organization.type must be one of the following values: projectProponent, "
                "projectDeveloper, marketParticipant, validationBody, other",
                "organization.countryCode must be a valid ISO31661 Alpha2 code",
            ],
        ),
    ],
)
@pytest.mark.anyio
async def test_create_user_organization_validation(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
    request_body: dict[str, Any],
    messages: list[str],
) -> None:
    url = f"{server.url}/app/create/user/organization"
    status, body, _ = await call(
        http, "POST", url, token=sign(app, clock()), json_body=request_body
    )
    assert status == 400
    assert body == {"statusCode": 400, "message": messages, "error": "Bad Request"}
    assert len(emulator.installations(app.app_id)) == 3


@pytest.mark.anyio
async def test_create_user_organization_needs_json_object(
    app: EmulatorApp, server: EmulatorServer, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    url = f"{server.url}/app/create/user/organization"
    for data in (b"", b"{oops", b"[]"):
        status, _, _ = await call(http, "POST", url, token=sign(app, clock()), data=data)
        assert status == 400


# ------------------------------------------------------------------------- pagination


def _pagination(
    total: int, page: int, page_count: int, next_page: int | None, prev_page: int | None
) -> dict[str, Any]:
    return {
        "total": total,
        "currentPage": page,
        "pageCount": page_count,
        "nextPage": next_page,
        "prevPage": prev_page,
    }


@pytest.mark.parametrize(
    ("limit", "page", "expected", "count"),
    [
        (10, 0, _pagination(25, 0, 3, 1, None), 10),
        (10, 1, _pagination(25, 1, 3, 2, 0), 10),
        (10, 2, _pagination(25, 2, 3, None, 1), 5),
        (10, 3, _pagination(25, 3, 3, None, 2), 0),
        (5, 4, _pagination(25, 4, 5, None, 3), 5),  # exact multiple: no phantom page
        (5, 3, _pagination(25, 3, 5, 4, 2), 5),
        (25, 0, _pagination(25, 0, 1, None, None), 25),
        (100, 0, _pagination(25, 0, 1, None, None), 25),
    ],
)
@pytest.mark.parametrize("style", ["null", "absent"])
@pytest.mark.anyio
async def test_projects_pagination(
    key_pem: str,
    clock: ManualClock,
    http: aiohttp.ClientSession,
    limit: int,
    page: int,
    expected: dict[str, Any],
    count: int,
    style: str,
) -> None:
    emulator = ICREmulator(clock=clock, page_end_style=style)  # type: ignore[arg-type]
    app = emulator.create_app(private_key_pem=key_pem)
    async with emulator.serve() as server:
        _, token, _ = await call(
            http, "POST", f"{server.url}/app/accessTokens", token=sign(app, clock())
        )
        status, body, _ = await call(
            http,
            "GET",
            f"{server.url}/projects",
            token=token["token"],
            params={"limit": str(limit), "page": str(page)},
        )
    assert status == 200
    if style == "absent":
        expected = {k: v for k, v in expected.items() if v is not None}
    assert body["pagination"] == expected
    assert len(body["projects"]) == count
    if count:
        assert body["projects"][0]["name"].endswith(f"#{page * limit + 1}")


@pytest.mark.anyio
async def test_projects_are_deterministic_and_complete(
    key_pem: str, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    async def projects(seed: int) -> list[dict[str, Any]]:
        emulator = ICREmulator(clock=clock, seed=seed)
        app = emulator.create_app(private_key_pem=key_pem)
        async with emulator.serve() as server:
            _, token, _ = await call(
                http, "POST", f"{server.url}/app/accessTokens", token=sign(app, clock())
            )
            _, body, _ = await call(
                http, "GET", f"{server.url}/projects?limit=100", token=token["token"]
            )
        result: list[dict[str, Any]] = body["projects"]
        return result

    first = await projects(1)
    assert first == await projects(1)
    assert first != await projects(2)
    assert len({p["id"] for p in first}) == 25
    for key in ("id", "name", "country", "methodology", "status", "createdAt"):
        assert key in first[0]


@pytest.mark.anyio
async def test_empty_list(
    emulator: ICREmulator, server: EmulatorServer, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    lonely = emulator.create_app(private_key_pem=emulator.default_app.private_key_pem)
    for style in ("null", "absent"):
        emulator.page_end_style = style
        status, body, _ = await call(
            http, "GET", f"{server.url}/app/installations", token=sign(lonely, clock())
        )
        assert status == 200
        assert body["installations"] == []
        pagination = body["pagination"]
        assert (pagination["total"], pagination["pageCount"], pagination["currentPage"]) == (
            0,
            0,
            0,
        )
        assert pagination.get("nextPage") is None
        assert pagination.get("prevPage") is None
        assert ("nextPage" in pagination) is (style == "null")


@pytest.mark.anyio
async def test_installation_pages(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    for _ in range(9):
        emulator.add_installation(app.app_id)
    every = [i["id"] for i in emulator.installations(app.app_id)]
    seen: list[str] = []
    page: int | None = 0
    token = sign(app, clock())
    for _ in range(10):  # bounded: 12 installations / 4 per page = 3 pages
        if page is None:
            break
        _, body, _ = await call(
            http, "GET", f"{server.url}/app/installations?limit=4&page={page}", token=token
        )
        seen += [i["id"] for i in body["installations"]]
        page = body["pagination"]["nextPage"]
    assert seen == every


@pytest.mark.anyio
async def test_repeat_pages(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    emulator.repeat_pages = True
    token = sign(app, clock())
    _, first, _ = await call(
        http, "GET", f"{server.url}/app/installations?limit=2&page=0", token=token
    )
    _, again, _ = await call(
        http, "GET", f"{server.url}/app/installations?limit=2&page=1", token=token
    )
    assert again == first
    assert again["pagination"]["currentPage"] == 0
    assert again["pagination"]["nextPage"] == 1


@pytest.mark.parametrize(
    ("query", "messages"),
    [
        ("limit=0", ["limit must not be less than 1"]),
        ("limit=101", ["limit must not be greater than 100"]),
        ("limit=ten", ["limit must be an integer number"]),
        ("limit=&page=0", ["limit must be an integer number"]),
        ("page=-1", ["page must not be less than 0"]),
        (
            "page=1.5&limit=2.0",
            ["limit must be an integer number", "page must be an integer number"],
        ),
    ],
)
@pytest.mark.anyio
async def test_pagination_validation(
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
    query: str,
    messages: list[str],
) -> None:
    status, body, _ = await call(
        http, "GET", f"{server.url}/app/installations?{query}", token=sign(app, clock())
    )
    assert status == 400
    assert body["message"] == messages


# ------------------------------------------------------------ tokens and organizations


@pytest.mark.anyio
async def test_organization_route(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    first, second = emulator.installations(app.app_id)[:2]
    token = (await mint(http, server, app, clock, first["id"]))["token"]
    org_id = first["organization"]["id"]
    status, body, _ = await call(http, "GET", f"{server.url}/organizations/{org_id}", token=token)
    assert status == 200
    assert body == first["organization"]
    other_org = second["organization"]["id"]
    status, body, _ = await call(
        http, "GET", f"{server.url}/organizations/{other_org}", token=token
    )
    assert status == 403
    assert body["error"] == "Forbidden"
    _, app_token, _ = await call(
        http, "POST", f"{server.url}/app/accessTokens", token=sign(app, clock())
    )
    status, _, _ = await call(
        http, "GET", f"{server.url}/organizations/{org_id}", token=app_token["token"]
    )
    assert status == 403
    status, _, _ = await call(http, "GET", f"{server.url}/organizations/{org_id}", token="crs_x")
    assert status == 401


@pytest.mark.anyio
async def test_organization_route_needs_organization_info(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    inst = emulator.add_installation(app.app_id, permissions={"organization_members": "VIEW"})
    token = (await mint(http, server, app, clock, inst["id"]))["token"]
    status, body, _ = await call(
        http, "GET", f"{server.url}/organizations/{inst['organization']['id']}", token=token
    )
    assert status == 403
    assert body["message"] == "Missing permission: organization_info"


@pytest.mark.anyio
async def test_projects_accept_installation_tokens_only_when_valid(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    inst = first_installation(emulator, app)
    token = (await mint(http, server, app, clock, inst["id"]))["token"]
    assert (await call(http, "GET", f"{server.url}/projects", token=token))[0] == 200
    # A JWT is not an access token.
    assert (await call(http, "GET", f"{server.url}/projects", token=sign(app, clock())))[0] == 401
    assert (await call(http, "GET", f"{server.url}/projects"))[0] == 401
    assert emulator.stats.token_rejections == {"unknown": 1, "missing": 1}


@pytest.mark.anyio
async def test_revoke_token(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    inst = first_installation(emulator, app)
    token = (await mint(http, server, app, clock, inst["id"]))["token"]
    url = f"{server.url}/app/installations/token"
    status, body, _ = await call(http, "DELETE", url, token=token)
    assert (status, body) == (200, True)
    assert emulator.stats.revocations == 1
    status, body, _ = await call(http, "GET", f"{server.url}/projects", token=token)
    assert (status, body["message"]) == (401, "Access token has been revoked")
    assert (await call(http, "DELETE", url, token=token))[0] == 401
    assert (await call(http, "DELETE", url, token="crs_unknown"))[0] == 401
    # App access tokens can be revoked the same way.
    _, app_token, _ = await call(
        http, "POST", f"{server.url}/app/accessTokens", token=sign(app, clock())
    )
    assert (await call(http, "DELETE", url, token=app_token["token"]))[:2] == (200, True)
    assert emulator.stats.revocations == 2


@pytest.mark.anyio
async def test_remove_installation(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    inst = first_installation(emulator, app)
    token = (await mint(http, server, app, clock, inst["id"]))["token"]
    emulator.remove_installation(inst["id"])
    assert inst["id"] not in [i["id"] for i in emulator.installations(app.app_id)]
    status, _, _ = await call(
        http, "GET", f"{server.url}/app/installations/{inst['id']}", token=sign(app, clock())
    )
    assert status == 404
    status, _, _ = await call(
        http, "GET", f"{server.url}/organizations/{inst['organization']['id']}", token=token
    )
    assert status == 401


@pytest.mark.anyio
async def test_token_expiry_and_controls(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    first, second, third = emulator.installations(app.app_id)

    async def org_status(inst: dict[str, Any], token: str) -> int:
        url = f"{server.url}/organizations/{inst['organization']['id']}"
        return (await call(http, "GET", url, token=token))[0]

    tokens = [(await mint(http, server, app, clock, i["id"]))["token"] for i in (first, second)]
    emulator.expire_tokens(first["id"])
    assert await org_status(first, tokens[0]) == 401
    assert await org_status(second, tokens[1]) == 200
    emulator.revoke_tokens(second["id"])
    assert await org_status(second, tokens[1]) == 401
    fresh = [(await mint(http, server, app, clock, i["id"]))["token"] for i in (first, second)]
    emulator.expire_tokens()
    assert [await org_status(i, t) for i, t in zip((first, second), fresh, strict=True)] == [
        401,
        401,
    ]
    fresh = [(await mint(http, server, app, clock, i["id"]))["token"] for i in (first, second)]
    emulator.revoke_tokens()
    assert [await org_status(i, t) for i, t in zip((first, second), fresh, strict=True)] == [
        401,
        401,
    ]

    # Natural expiry follows the (settable) TTL and the clock.
    emulator.installation_token_ttl = 100
    token = (await mint(http, server, app, clock, third["id"]))["token"]
    clock.advance(99)
    assert await org_status(third, token) == 200
    clock.advance(1)
    assert await org_status(third, token) == 401
    assert emulator.stats.token_rejections["expired"] == 4
    assert emulator.stats.token_rejections["revoked"] == 3


@pytest.mark.anyio
async def test_propagation_lag(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    emulator.propagation_lag = 5
    token = await mint(http, server, app, clock, first_installation(emulator, app)["id"])
    url = f"{server.url}/projects"
    assert (await call(http, "GET", url, token=token["token"]))[0] == 401
    clock.advance(4.9)
    assert (await call(http, "GET", url, token=token["token"]))[0] == 401
    clock.advance(0.1)
    assert (await call(http, "GET", url, token=token["token"]))[0] == 200
    assert emulator.stats.token_rejections["propagation"] == 2


# -------------------------------------------------------------------- headers, routing


@pytest.mark.anyio
async def test_date_header_follows_clock_and_skew(
    emulator: ICREmulator, server: EmulatorServer, http: aiohttp.ClientSession, clock: ManualClock
) -> None:
    _, _, headers = await call(http, "GET", f"{server.url}/projects")
    assert headers["Date"] == email.utils.formatdate(START, usegmt=True)
    emulator.skew = -3600
    clock.advance(30)
    _, _, headers = await call(http, "GET", f"{server.url}/projects")
    assert headers["Date"] == "Tue, 14 Nov 2023 21:13:50 GMT"
    assert email.utils.parsedate_to_datetime(headers["Date"]).timestamp() == START + 30 - 3600


@pytest.mark.anyio
async def test_request_ids_are_fresh(server: EmulatorServer, http: aiohttp.ClientSession) -> None:
    ids = {
        (await call(http, "GET", f"{server.url}/projects"))[2]["x-icr-request-id"] for _ in range(5)
    }
    assert len(ids) == 5


@pytest.mark.anyio
async def test_unknown_route_is_nest_404(
    emulator: ICREmulator, server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    status, body, headers = await call(http, "GET", f"{server.url}/nope")
    assert status == 404
    assert body == {"statusCode": 404, "message": "Cannot GET /nope", "error": "Not Found"}
    assert "x-icr-request-id" in headers
    status, body, _ = await call(http, "PUT", f"{server.url}/app/accessTokens")
    assert (status, body["message"]) == (404, "Cannot PUT /app/accessTokens")
    assert emulator.stats.requests[("GET", "unmatched")] == 1
    assert emulator.stats.total_requests == 2


@pytest.mark.anyio
async def test_posts_and_stats(
    emulator: ICREmulator, server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    url = f"{server.url}/organizations/o1/inventory/requests/retire"
    for body in (b'{"creditId":"c1","amount":1}', b'{"creditId":"c1","amount":1}', b"{}"):
        await call(http, "POST", url, data=body)
    stats = emulator.stats
    assert stats.posts[("/organizations/o1/inventory/requests/retire", b"{}")] == 1
    assert stats.duplicate_posts == 1
    assert stats.total_requests == 3
    emulator.reset_stats()
    assert emulator.stats is stats
    assert (stats.total_requests, stats.duplicate_posts) == (0, 0)


# ----------------------------------------------------------------------------- faults


@pytest.mark.anyio
async def test_status_fault_with_retry_after_times_and_after(
    emulator: ICREmulator, server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    fault = emulator.faults.add(
        Fault(method="GET", path="/projects", status=429, retry_after="7", times=2, after=1)
    )
    results = [await call(http, "GET", f"{server.url}/projects") for _ in range(4)]
    assert [r[0] for r in results] == [401, 429, 429, 401]
    assert results[1][1] == {
        "statusCode": 429,
        "message": "ThrottlerException: Too Many Requests",
        "error": "Too Many Requests",
    }
    assert results[1][2]["Retry-After"] == "7"
    assert "x-icr-request-id" in results[1][2]
    assert emulator.faults.fired(fault) == 2
    # A fault that does not match the method or path leaves requests alone.
    emulator.faults.add(Fault(method="POST", path="/projects"))
    emulator.faults.add(Fault(path="/app/*", times=None))
    assert (await call(http, "GET", f"{server.url}/projects"))[0] == 401
    assert (await call(http, "POST", f"{server.url}/app/accessTokens"))[0] == 500
    emulator.faults.clear()
    assert emulator.faults.fired(fault) == 0
    assert (await call(http, "POST", f"{server.url}/app/accessTokens"))[0] == 401


@pytest.mark.anyio
async def test_status_fault_custom_bodies(
    emulator: ICREmulator, server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    url = f"{server.url}/projects"
    emulator.faults.add(Fault(status=503, body={"statusCode": 503, "message": ["a", "b"]}))
    status, body, _ = await call(http, "GET", url)
    assert (status, body) == (503, {"statusCode": 503, "message": ["a", "b"]})
    emulator.faults.add(Fault(status=502, body="<html>bad gateway</html>"))
    status, body, headers = await call(http, "GET", url)
    assert (status, body, headers["Content-Type"]) == (
        502,
        b"<html>bad gateway</html>",
        "text/plain",
    )
    emulator.faults.add(Fault(status=500, body=b"oops", headers={"Content-Type": "text/x-oops"}))
    status, body, headers = await call(http, "GET", url)
    assert (status, body, headers["Content-Type"]) == (500, b"oops", "text/x-oops")
    emulator.faults.add(Fault(status=204))
    assert (await call(http, "GET", url))[:2] == (204, b"")


@pytest.mark.anyio
async def test_fault_applies_before_auth_and_counts_requests(
    emulator: ICREmulator, server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    emulator.faults.add(Fault(path="/app/installations/*/accessTokens", status=502))
    status, _, _ = await call(http, "POST", f"{server.url}/app/installations/x/accessTokens")
    assert status == 502
    assert emulator.stats.requests[("POST", "create_installation_token")] == 1
    assert emulator.stats.jwt_rejections == {}


@pytest.mark.anyio
async def test_fault_probability_is_seeded(key_pem: str, http: aiohttp.ClientSession) -> None:
    async def pattern(seed: int) -> list[int]:
        emulator = ICREmulator(seed=seed)
        emulator.faults.add(Fault(status=503, probability=0.5, times=None))
        async with emulator.serve() as server:
            return [(await call(http, "GET", f"{server.url}/projects"))[0] for _ in range(16)]

    first = await pattern(5)
    assert first == await pattern(5)
    assert set(first) == {401, 503}


@pytest.mark.anyio
async def test_reset_fault(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    fault = emulator.faults.add(Fault(path="/app/accessTokens", action="reset"))
    with pytest.raises(aiohttp.ClientError):
        await call(http, "POST", f"{server.url}/app/accessTokens", token=sign(app, clock()))
    assert emulator.faults.fired(fault) == 1
    # The request reached the server and was processed; only the answer was lost.
    assert emulator.stats.app_token_mints == 1
    assert (await call(http, "POST", f"{server.url}/app/accessTokens"))[0] == 401


@pytest.mark.anyio
async def test_truncate_fault(
    emulator: ICREmulator, app: EmulatorApp, server: EmulatorServer, clock: ManualClock
) -> None:
    emulator.faults.add(Fault(path="/app/installations", action="truncate"))
    async with aiohttp.ClientSession() as http:
        response = await http.get(
            f"{server.url}/app/installations",
            headers={"Authorization": f"Bearer {sign(app, clock())}"},
        )
        async with response:
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()
        assert (await call(http, "GET", f"{server.url}/projects"))[0] == 401


@pytest.mark.anyio
async def test_nonjson_fault(
    emulator: ICREmulator, server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    emulator.faults.add(Fault(action="nonjson"))
    status, body, headers = await call(http, "GET", f"{server.url}/projects")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert body.startswith(b"<!DOCTYPE html>")


@pytest.mark.anyio
async def test_wrong_content_type_fault(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    emulator.faults.add(Fault(path="/app/installations", action="wrong_content_type"))
    status, body, headers = await call(
        http, "GET", f"{server.url}/app/installations", token=sign(app, clock())
    )
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert json.loads(body)["pagination"]["total"] == 3


@pytest.mark.anyio
async def test_hang_and_delay_faults_end_with_client_timeout(
    emulator: ICREmulator, key_pem: str
) -> None:
    emulator.faults.add(Fault(action="hang"))
    emulator.faults.add(Fault(delay=30.0, status=500))
    timeout = aiohttp.ClientTimeout(total=0.2)
    async with emulator.serve() as server, aiohttp.ClientSession(timeout=timeout) as http:
        for _ in range(2):
            with pytest.raises(asyncio.TimeoutError):
                await call(http, "GET", f"{server.url}/projects")
        # Once both faults are spent, the server answers normally.
        assert (await call(http, "GET", f"{server.url}/projects"))[0] == 401


@pytest.mark.anyio
async def test_delay_action_answers_normally_after_the_delay(
    emulator: ICREmulator, server: EmulatorServer, http: aiohttp.ClientSession
) -> None:
    fault = emulator.faults.add(Fault(action="delay", delay=0.01, times=None))
    for _ in range(2):
        status, body, _ = await call(http, "GET", f"{server.url}/projects")
        assert (status, body["message"]) == (401, "Missing bearer token")
    assert emulator.faults.fired(fault) == 2


@pytest.mark.anyio
async def test_close_wakes_a_hanging_request(emulator: ICREmulator) -> None:
    emulator.faults.add(Fault(action="hang"))
    async with aiohttp.ClientSession() as http:
        server = await emulator.start()
        request = asyncio.ensure_future(call(http, "GET", f"{server.url}/projects"))
        for _ in range(100):  # bounded: wait until the server holds the request
            if emulator.stats.total_requests:
                break
            await asyncio.sleep(0.01)
        await server.close()
        await server.close()  # idempotent
        with pytest.raises(aiohttp.ClientError):
            await request


# -------------------------------------------------------------------------------- TLS


@pytest.mark.anyio
async def test_tls(emulator: ICREmulator, app: EmulatorApp, clock: ManualClock) -> None:
    async with emulator.serve(tls=True) as server:
        assert server.url.startswith("https://127.0.0.1:")
        assert server.ca_pem is not None
        context = ssl.create_default_context(cadata=server.ca_pem)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
            status, _, _ = await call(
                http, "POST", f"{server.url}/app/accessTokens", token=sign(app, clock())
            )
            assert status == 200
            assert emulator.installations(app.app_id)[0]["accessTokensUrl"].startswith(server.url)
        # A client that does not trust the CA fails its handshake (and the server survives).
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await call(http, "GET", f"{server.url}/projects")
        client_context = server.client_ssl_context()
        assert client_context is not None
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_context)
        ) as http:
            assert (await call(http, "GET", f"{server.url}/projects"))[0] == 401


# ------------------------------------------------ variants: every plausible ICR (issue 12)

REQUIRED_VARIANTS = (
    "icr-docs",
    "one-based",
    "created-201",
    "clock-behind",
    "clock-ahead",
    "short-tokens",
    "http-date-retry",
    "everything-else",
)


def make_emulator(
    clock: ManualClock, key_pem: str, **options: Any
) -> tuple[ICREmulator, EmulatorApp]:
    emulator = ICREmulator(clock=clock, seed=7, **options)
    return emulator, emulator.create_app(7, private_key_pem=key_pem)


def http_time(value: str) -> float:
    return email.utils.parsedate_to_datetime(value).timestamp()


def test_variants_table() -> None:
    assert tuple(VARIANTS)[: len(REQUIRED_VARIANTS)] == REQUIRED_VARIANTS
    defaults = ICREmulator()
    assert VARIANTS["icr-docs"].kwargs() == options_of(defaults)
    assert options_of(defaults) == {
        "page_base": 0,
        "page_end_style": "null",
        "post_status": 200,
        "clock_offset": 0.0,
        "installation_token_ttl": 7200.0,
        "app_token_ttl": 3600.0,
        "retry_after_style": "seconds",
        "request_id_header": "x-icr-request-id",
    }
    # "everything-else" takes the other reading of every option at once.
    other = VARIANTS["everything-else"].kwargs()
    assert all(other[k] != v for k, v in options_of(defaults).items())  # type: ignore[literal-required]
    assert other["page_base"] == 1
    assert other["clock_offset"] == -420
    for name, variant in VARIANTS.items():
        assert variant.name == name
        assert variant.description
        emulator = variant.apply(ICREmulator())
        assert options_of(emulator) == variant.kwargs()
        assert options_of(ICREmulator(**variant.kwargs())) == variant.kwargs()
    assert VARIANTS["clock-ahead"].clock_offset == 420.0
    assert VARIANTS["short-tokens"].installation_token_ttl == 120.0
    with pytest.raises(TypeError):
        VARIANTS["new"] = VARIANTS["icr-docs"]  # type: ignore[index]
    derived = attrs.evolve(VARIANTS["one-based"], name="one-based-null", page_end_style="null")
    assert (derived.page_base, derived.page_end_style) == (1, "null")


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("page_base", 2),
        ("page_base", True),
        ("page_base", "1"),
        ("page_end_style", "missing"),
        ("post_status", 202),
        ("clock_offset", float("nan")),
        ("clock_offset", "420"),
        ("installation_token_ttl", 0),
        ("installation_token_ttl", float("inf")),
        ("app_token_ttl", -1),
        ("retry_after_style", "date"),
        ("request_id_header", "x request id"),
        ("request_id_header", ""),
    ],
)
def test_option_validation(name: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=name):
        ICREmulator(**{name: bad})
    emulator = ICREmulator()
    before = getattr(emulator, name)
    with pytest.raises(ValueError, match=name):
        setattr(emulator, name, bad)
    assert getattr(emulator, name) == before  # a refused value changes nothing
    with pytest.raises(ValueError, match=name):
        EmulatorVariant(name="bad", **{name: bad})


def test_skew_is_clock_offset(clock: ManualClock) -> None:
    emulator = ICREmulator(clock=clock, clock_offset=-420)
    assert emulator.skew == -420
    assert emulator.server_now() == START - 420
    emulator.skew = 60
    assert emulator.clock_offset == 60
    assert ICREmulator(request_id_header="X-Trace-Id").request_id_header == "x-trace-id"


@pytest.mark.anyio
async def test_one_based_pages(
    key_pem: str, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    emulator, app = make_emulator(clock, key_pem, page_base=1, page_end_style="absent")
    every = [i["id"] for i in emulator.installations(app.app_id)]
    token = sign(app, clock())
    async with emulator.serve() as server:

        async def page(number: int) -> dict[str, Any]:
            status, body, _ = await call(
                http,
                "GET",
                f"{server.url}/app/installations?limit=3&page={number}",
                token=token,
            )
            assert status == 200
            result: dict[str, Any] = body
            return result

        zero, one = await page(0), await page(1)
        # A 1-based server reads page=0 as its first page: the same items twice.
        assert zero == one
        assert one["pagination"] == {"total": 7, "currentPage": 1, "pageCount": 3, "nextPage": 2}
        assert [i["id"] for i in one["installations"]] == every[:3]
        last = await page(3)
        assert last["pagination"] == {"total": 7, "currentPage": 3, "pageCount": 3, "prevPage": 2}
        assert [i["id"] for i in last["installations"]] == every[6:]
        # Following nextPage from page=0 yields every installation once (bounded loop).
        seen: list[str] = []
        number: int | None = 0
        for _ in range(10):
            if number is None:
                break
            body = await page(number)
            seen += [i["id"] for i in body["installations"]]
            number = body["pagination"].get("nextPage")
        assert seen == every
        # Nulls at the ends when asked, and 0-based numbering again at run time.
        emulator.page_end_style = "null"
        assert (await page(3))["pagination"]["nextPage"] is None
        assert (await page(1))["pagination"]["prevPage"] is None
        emulator.page_base = 0
        zero, one = await page(0), await page(1)
        assert zero["pagination"]["currentPage"] == 0
        assert zero["pagination"]["nextPage"] == 1
        assert [i["id"] for i in one["installations"]] == every[3:6]


@pytest.mark.anyio
async def test_one_based_empty_list_and_projects(
    key_pem: str, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    emulator = ICREmulator(clock=clock, page_base=1, page_end_style="absent")
    app = emulator.create_app(private_key_pem=key_pem)
    async with emulator.serve() as server:
        _, body, _ = await call(
            http, "GET", f"{server.url}/app/installations", token=sign(app, clock())
        )
        assert body == {
            "pagination": {"total": 0, "currentPage": 1, "pageCount": 0},
            "installations": [],
        }
        _, token, _ = await call(
            http, "POST", f"{server.url}/app/accessTokens", token=sign(app, clock())
        )
        _, body, _ = await call(
            http, "GET", f"{server.url}/projects?limit=10&page=3", token=token["token"]
        )
        assert body["pagination"] == {"total": 25, "currentPage": 3, "pageCount": 3, "prevPage": 2}
        assert body["projects"][0]["name"].endswith("#21")


def _probe_routes(emulator: ICREmulator, app: web.Application) -> None:
    """Extension routes like the ledger's: one POST answers 200, one 201, one streams."""

    async def plain(request: web.Request) -> web.StreamResponse:
        return emulator.json_response({"ok": True})

    async def created(request: web.Request) -> web.StreamResponse:
        return emulator.json_response({"ok": True}, status=201)

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        await response.write(b"{}")
        return response

    app.router.add_post("/probe/plain", plain, name="probe_plain")
    app.router.add_post("/probe/created", created, name="probe_created")
    app.router.add_get("/probe/stream", streamed, name="probe_stream", allow_head=False)


def test_make_app_adds_built_in_routes_in_a_fixed_order_then_the_emulators_own() -> None:
    emulator = ICREmulator()
    emulator.route_registrars.append(_probe_routes)
    names = [route.name for route in emulator.make_app().router.routes() if route.name]
    # Core endpoints, the control routes, the ledger, then what the test added.
    firsts = [names.index(n) for n in ("revoke_token", "admin_stats", "list_addresses")]
    assert firsts == sorted(firsts)
    assert names[-3:] == ["probe_plain", "probe_created", "probe_stream"]
    # Registration is explicit and per emulator: nothing leaks into the next one.
    fresh = [route.name for route in ICREmulator().make_app().router.routes() if route.name]
    assert fresh == names[:-3]


@pytest.mark.parametrize("post_status", [200, 201])
@pytest.mark.anyio
async def test_post_status_applies_to_every_successful_post(
    key_pem: str, clock: ManualClock, http: aiohttp.ClientSession, post_status: int
) -> None:
    emulator, app = make_emulator(clock, key_pem, post_status=post_status)
    emulator.route_registrars.append(_probe_routes)
    inst = emulator.installations(app.app_id)[0]
    async with emulator.serve() as server:
        url = server.url
        token = sign(app, clock())
        status, app_token, _ = await call(http, "POST", f"{url}/app/accessTokens", token=token)
        assert status == post_status
        assert TOKEN_RE.fullmatch(app_token["token"])
        status, body, _ = await call(
            http, "POST", f"{url}/app/installations/{inst['id']}/accessTokens", token=token
        )
        assert (status, body["installationId"]) == (post_status, inst["id"])
        request = {
            "user": {"email": "ada@example.com"},
            "organization": {"fullName": "Ada", "type": "other"},
        }
        status, body, _ = await call(
            http, "POST", f"{url}/app/create/user/organization", token=token, json_body=request
        )
        assert (status, "installation" in body) == (post_status, True)
        # Decided centrally: an extension's 200 and 201 both become the emulator's choice.
        assert (await call(http, "POST", f"{url}/probe/plain"))[0] == post_status
        assert (await call(http, "POST", f"{url}/probe/created"))[0] == post_status
        # Only successful POSTs: GETs, DELETEs, errors and control routes keep theirs.
        assert (await call(http, "GET", f"{url}/app/installations", token=token))[0] == 200
        status, body, _ = await call(
            http, "DELETE", f"{url}/app/installations/token", token=app_token["token"]
        )
        assert (status, body) == (200, True)
        assert (await call(http, "POST", f"{url}/app/accessTokens"))[0] == 401
        assert (await call(http, "POST", f"{url}/_emulator/stats/reset"))[0] == 200
        assert (await call(http, "POST", f"{url}/_emulator/faults", json_body={}))[0] == 201
    assert emulator.created_response({}).status == post_status


@pytest.mark.parametrize("offset", [-420.0, 420.0])
@pytest.mark.anyio
async def test_clock_offset_drives_date_expiry_and_jwt_checks(
    key_pem: str, clock: ManualClock, http: aiohttp.ClientSession, offset: float
) -> None:
    emulator, app = make_emulator(
        clock, key_pem, clock_offset=offset, installation_token_ttl=120, app_token_ttl=300
    )
    emulator.route_registrars.append(_probe_routes)
    server_now = START + offset
    inst = emulator.installations(app.app_id)[0]
    async with emulator.serve() as server:
        _, _, headers = await call(http, "GET", f"{server.url}/projects")
        assert http_time(headers["Date"]) == server_now
        # A streamed answer (prepared by its handler, not the middleware) is on server time too.
        _, _, headers = await call(http, "GET", f"{server.url}/probe/stream")
        assert http_time(headers["Date"]) == server_now
        assert "x-icr-request-id" in headers
        # A JWT signed on the server's clock works; expiresAt is server time + the TTL.
        on_server = sign(app, server_now)
        status, token, _ = await call(
            http,
            "POST",
            f"{server.url}/app/installations/{inst['id']}/accessTokens",
            token=on_server,
        )
        assert status == 200
        assert http_time_iso(token["createdAt"]) == server_now
        assert http_time_iso(token["expiresAt"]) == server_now + 120
        _, app_token, _ = await call(
            http, "POST", f"{server.url}/app/accessTokens", token=on_server
        )
        assert http_time_iso(app_token["expiresAt"]) == server_now + 300
        # The same JWT signed on the client's clock (iat now-60, exp now+540) is judged on
        # the server's: 7 minutes behind, its iat is in the future and exp too far ahead.
        status, body, _ = await call(
            http, "POST", f"{server.url}/app/accessTokens", token=sign(app, clock())
        )
        if offset < 0:
            assert (status, body["message"]) == (401, "JWT issued in the future (iat)")
        else:
            assert status == 200
            status, body, _ = await call(
                http,
                "POST",
                f"{server.url}/app/accessTokens",
                token=sign(app, clock(), iat=-60, exp=400),
            )
            assert (status, body["message"]) == (401, "JWT expired")
        # The installation token lapses at server time + 120, not client time + 120.
        org_url = f"{server.url}/organizations/{inst['organization']['id']}"
        clock.advance(119)
        assert (await call(http, "GET", org_url, token=token["token"]))[0] == 200
        clock.advance(1)
        status, body, _ = await call(http, "GET", org_url, token=token["token"])
        assert (status, body["message"]) == (401, "Access token expired")


def http_time_iso(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.mark.anyio
async def test_icr_demo_jwt_is_accepted_and_exp_rule_is_on_exp_only(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    url = f"{server.url}/app/accessTokens"
    now = clock()
    # ICR's demo app: iat = now-60, exp = now+600 (exp - iat = 660) and alg in the payload.
    demo = sign(app, now, iat=-60, exp=600, extra={"alg": "RS256"})
    assert jwt.decode(demo, RSAKey.import_key(app.private_key_pem)).claims["alg"] == "RS256"
    assert (await call(http, "POST", url, token=demo))[0] == 200
    # exp is measured against the server's clock, with the drift leeway (30 s) on top.
    assert (await call(http, "POST", url, token=sign(app, now, iat=0, exp=630)))[0] == 200
    status, body, _ = await call(http, "POST", url, token=sign(app, now, iat=0, exp=631))
    assert (status, body["message"]) == (401, "JWT exp must be at most 10 minutes in the future")
    status, _, _ = await call(http, "POST", url, token=sign(app, now, iat=-60, exp=900))
    assert status == 401
    # A long exp - iat is fine as long as exp is near: iat an hour back, exp in 5 minutes.
    assert (await call(http, "POST", url, token=sign(app, now, iat=-3600, exp=300)))[0] == 200
    # A JWT refused as too far ahead is fine once the server's clock catches up (cached).
    early = sign(app, now, iat=0, exp=700)
    assert (await call(http, "POST", url, token=early))[0] == 401
    clock.advance(100)
    assert (await call(http, "POST", url, token=early))[0] == 200
    assert emulator.stats.jwt_rejections == {"exp_too_far": 3}


@pytest.mark.parametrize("offset", [-420.0, 0.0, 420.0])
@pytest.mark.anyio
async def test_retry_after_http_date_on_server_clock(
    key_pem: str, clock: ManualClock, http: aiohttp.ClientSession, offset: float
) -> None:
    emulator, _ = make_emulator(clock, key_pem, retry_after_style="http-date", clock_offset=offset)
    url_path = "/projects"
    emulator.faults.add(Fault(path=url_path, status=429, retry_after=7, times=None))
    async with emulator.serve() as server:
        status, _, headers = await call(http, "GET", server.url + url_path)
        assert status == 429
        assert http_time(headers["Date"]) == START + offset
        assert headers["Retry-After"] == email.utils.formatdate(START + offset + 7, usegmt=True)
        # Mid-second, the date is rounded up: waiting until it never comes back early.
        clock.advance(0.5)
        _, _, headers = await call(http, "GET", server.url + url_path)
        assert http_time(headers["Retry-After"]) == START + offset + 8
        # Switched at run time; a string of seconds works too, and a date passes as it is.
        emulator.retry_after_style = "seconds"
        assert (await call(http, "GET", server.url + url_path))[2]["Retry-After"] == "7"
        emulator.faults.clear()
        emulator.faults.add(Fault(status=503, retry_after="1.5"))
        assert (await call(http, "GET", server.url + url_path))[2]["Retry-After"] == "1.5"
        emulator.retry_after_style = "http-date"
        emulator.faults.add(Fault(status=503, retry_after="12"))
        _, _, headers = await call(http, "GET", server.url + url_path)
        assert http_time(headers["Retry-After"]) == START + offset + 1 + 12
        literal = "Wed, 21 Oct 2015 07:28:00 GMT"
        emulator.faults.add(Fault(status=503, retry_after=literal))
        assert (await call(http, "GET", server.url + url_path))[2]["Retry-After"] == literal
    with pytest.raises(ValueError, match="retry_after"):
        Fault(retry_after=-1)


@pytest.mark.parametrize("header", ["x-icr-request-id", "x-request-id", None])
@pytest.mark.anyio
async def test_request_id_header(
    key_pem: str, clock: ManualClock, http: aiohttp.ClientSession, header: str | None
) -> None:
    emulator, app = make_emulator(clock, key_pem, request_id_header=header)
    emulator.faults.add(Fault(path="/nowhere", status=503))
    async with emulator.serve() as server:
        answers = [
            await call(http, "GET", f"{server.url}/projects"),  # 401
            await call(http, "GET", f"{server.url}/nowhere"),  # a fault
            await call(http, "GET", f"{server.url}/nope"),  # 404
            await call(http, "GET", f"{server.url}/app/installations", token=sign(app, clock())),
        ]
    assert [a[0] for a in answers] == [401, 503, 404, 200]
    for name in ("x-icr-request-id", "x-request-id"):
        if name != header:
            assert all(name not in a[2] for a in answers)
    if header is not None:
        ids = [a[2][header] for a in answers]
        assert len(set(ids)) == len(ids)  # unique per response
        assert all(re.fullmatch(r"[0-9a-f-]{36}", i) for i in ids)


@pytest.mark.anyio
async def test_revoked_expired_and_lagging_tokens_say_why(
    emulator: ICREmulator,
    app: EmulatorApp,
    server: EmulatorServer,
    http: aiohttp.ClientSession,
    clock: ManualClock,
) -> None:
    first, second, third = emulator.installations(app.app_id)
    url = f"{server.url}/projects"

    async def message(token: str) -> str:
        status, body, _ = await call(http, "GET", url, token=token)
        assert status == 401
        text: str = body["message"]
        return text

    by_delete = (await mint(http, server, app, clock, first["id"]))["token"]
    revoke_url = f"{server.url}/app/installations/token"
    assert (await call(http, "DELETE", revoke_url, token=by_delete))[:2] == (200, True)
    assert await message(by_delete) == "Access token has been revoked"
    by_python = (await mint(http, server, app, clock, second["id"]))["token"]
    emulator.revoke_tokens(second["id"])
    assert await message(by_python) == "Access token has been revoked"
    forced = (await mint(http, server, app, clock, third["id"]))["token"]
    emulator.expire_tokens(third["id"])
    assert await message(forced) == "Access token expired"
    lapsed = (await mint(http, server, app, clock, third["id"]))["token"]
    clock.advance(7200)
    assert await message(lapsed) == "Access token expired"
    assert await message("crs_" + "0" * 48) == "Invalid access token"
    # Replication lag names no reason a client could mistake for a revoked or bad token.
    emulator.propagation_lag = 5
    fresh = (await mint(http, server, app, clock, third["id"]))["token"]
    lag = await message(fresh)
    assert lag == "Unauthorized"
    assert not re.search("revoked|expired|invalid", lag, re.IGNORECASE)
    clock.advance(5)
    assert (await call(http, "GET", url, token=fresh))[0] == 200
    # A token revoked during the lag says revoked, not "not there yet".
    lagging = (await mint(http, server, app, clock, third["id"]))["token"]
    emulator.revoke_tokens(third["id"])
    assert await message(lagging) == "Access token has been revoked"
    assert emulator.stats.token_rejections == {
        "revoked": 3,
        "expired": 2,
        "unknown": 1,
        "propagation": 1,
    }


@pytest.mark.parametrize("name", REQUIRED_VARIANTS)
@pytest.mark.anyio
async def test_every_variant_serves_a_full_flow(
    key_pem: str, clock: ManualClock, http: aiohttp.ClientSession, name: str
) -> None:
    """Mint, list every page by nextPage, read an organization, revoke: in each reading."""
    variant = VARIANTS[name]
    emulator, app = make_emulator(clock, key_pem, **variant.kwargs())
    every = [i["id"] for i in emulator.installations(app.app_id)]
    jwt_token = sign(app, emulator.server_now())
    async with emulator.serve() as server:
        seen: list[str] = []
        page: int | None = 0
        for _ in range(10):
            if page is None:
                break
            status, body, headers = await call(
                http,
                "GET",
                f"{server.url}/app/installations?limit=3&page={page}",
                token=jwt_token,
            )
            assert status == 200
            assert body["pagination"]["currentPage"] == max(page, variant.page_base)
            seen += [i["id"] for i in body["installations"]]
            page = body["pagination"].get("nextPage")
        assert seen == every
        inst = emulator.installations(app.app_id)[0]
        status, token, headers = await call(
            http,
            "POST",
            f"{server.url}/app/installations/{inst['id']}/accessTokens",
            token=jwt_token,
        )
        assert status == variant.post_status
        assert http_time(headers["Date"]) == START + variant.clock_offset
        lifetime = http_time_iso(token["expiresAt"]) - http_time_iso(token["createdAt"])
        assert lifetime == variant.installation_token_ttl
        if variant.request_id_header is not None:
            assert headers[variant.request_id_header]
        org_url = f"{server.url}/organizations/{inst['organization']['id']}"
        assert (await call(http, "GET", org_url, token=token["token"]))[0] == 200
        revoke = f"{server.url}/app/installations/token"
        assert (await call(http, "DELETE", revoke, token=token["token"]))[:2] == (200, True)
        status, body, _ = await call(http, "GET", org_url, token=token["token"])
        assert (status, body["message"]) == (401, "Access token has been revoked")
