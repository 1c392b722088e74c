"""The ICR emulator: an in-memory ICR Apps API served by :mod:`aiohttp.web` on loopback.

Everything the emulator knows lives in one :class:`ICREmulator`. Requests flow through one
middleware in this order: count the request (and record credit-action POST bodies), apply a
planned :class:`~icr_async.testing.Fault`, check ``x-icr-api-version``, then run the route
handler, which authenticates. Handlers raise :class:`EmulatorHTTPError`; the middleware turns
it into ICR's NestJS-style error body.

Extending the emulator (the organization / inventory / warehouse ledger lives in
``_ledger.py``): write ``register_routes(emulator, app)`` that adds routes to ``app.router``
with a ``name=`` (the name is the stats key), and append it to
:data:`EXTRA_ROUTE_REGISTRARS` at import time; every emulator created afterwards calls it from
:meth:`ICREmulator.make_app`. Inside handlers use :meth:`ICREmulator.authenticate_installation`
(token + organization + permission check), :meth:`ICREmulator.json_response`,
:meth:`ICREmulator.paginated_response`, :meth:`ICREmulator.organization` and
:meth:`ICREmulator.server_now`, and raise :class:`EmulatorHTTPError` for failures.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import http
import ipaddress
import json
import re
import secrets
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, NoReturn

import attrs
from aiohttp import web
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import RSAKey
from multidict import CIMultiDict

from icr_async._clock import Clock, system_clock

from ._crypto import canonical_public_pem, generate_private_key_pem
from ._data import DEFAULT_PERMISSIONS, ORGANIZATION_TYPES, DataFactory, iso
from ._faults import Fault, FaultInjector
from ._stats import EmulatorStats

__all__ = [
    "EXTRA_ROUTE_REGISTRARS",
    "AccessTokenRecord",
    "EmulatorApp",
    "EmulatorHTTPError",
    "EmulatorServer",
    "ICREmulator",
    "RouteRegistrar",
]

PageEndStyle = Literal["null", "absent"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RouteRegistrar = Callable[["ICREmulator", web.Application], None]
"""A callback that adds extra routes to an emulator's application."""

EXTRA_ROUTE_REGISTRARS: list[RouteRegistrar] = []
"""Registrars every new :class:`ICREmulator` copies into its ``route_registrars``."""

MAX_JWT_LIFETIME = 600
"""ICR refuses app JWTs whose ``exp - iat`` exceeds ten minutes."""

_JWT_CACHE_SIZE = 4096
_HANG_LIMIT = 60.0
_LOOPBACK_NAMES = frozenset(("localhost",))
_INT_RE = re.compile(r"-?\d{1,18}")
_JSON_CT = "application/json"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _error_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def nest_error_body(status: int, message: str | list[str] | None = None) -> bytes:
    """The JSON error body NestJS (ICR's framework) sends for ``status``."""
    phrase = _error_phrase(status)
    if message is None:
        if status == 429:
            message = "ThrottlerException: Too Many Requests"
        elif status == 500:
            message = "Internal server error"
        else:
            message = phrase
    return _dumps({"statusCode": status, "message": message, "error": phrase})


class EmulatorHTTPError(Exception):
    """Raised by route handlers; answered as ``{"statusCode", "message", "error"}``."""

    def __init__(
        self,
        status: int,
        message: str | list[str],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def to_response(self) -> web.Response:
        """The NestJS-style error response for this error."""
        return web.Response(
            status=self.status,
            body=nest_error_body(self.status, self.message),
            content_type=_JSON_CT,
            charset="utf-8",
            headers=self.headers,
        )


@attrs.frozen
class EmulatorApp:
    """An app registered with :meth:`ICREmulator.create_app`, with the key to sign its JWTs."""

    app_id: str
    private_key_pem: str = attrs.field(repr=False)
    app_name_id: str


@attrs.define
class AccessTokenRecord:
    """Server-side state of one minted access token (installation or app token)."""

    token: str = attrs.field(repr=False)
    id: str
    app_id: str
    installation_id: str | None
    organization_id: str | None
    permissions: dict[str, str]
    created_at: float
    expires_at: float
    revoked: bool = False
    expired: bool = False

    def to_json(self) -> dict[str, Any]:
        """The access token object as ICR returns it from a mint."""
        created = iso(self.created_at)
        data: dict[str, Any] = {
            "id": self.id,
            "createdAt": created,
            "updatedAt": created,
            "expiresAt": iso(self.expires_at),
            "token": self.token,
            "isActive": True,
            "permissions": dict(self.permissions),
            "appId": self.app_id,
        }
        if self.installation_id is not None:
            data["installationId"] = self.installation_id
            data["organizationId"] = self.organization_id
        return data


@attrs.frozen
class _VerifiedJWT:
    app_id: str
    iat: int
    exp: int


@attrs.define
class _AppRecord:
    app_id: str
    app_name_id: str
    keys: dict[str, RSAKey] = attrs.field(factory=dict)
    installation_ids: list[str] = attrs.field(factory=list)


@attrs.define
class _InstallationRecord:
    id: str
    app_id: str
    app_name_id: str
    organization_id: str
    permissions: dict[str, str]
    created_at: str
    updated_at: str
    # The last serialization and the base URL it was made for: the hot GET route reuses it.
    cache_base: str | None = None
    cache_body: bytes = b""


@attrs.define
class _AppState:
    """Per-``web.Application`` state (one emulator may be served several times)."""

    stopping: asyncio.Event = attrs.field(factory=asyncio.Event)


_STATE_KEY = web.AppKey("icr_emulator_state", _AppState)


def _b64url_json(segment: str) -> Any:
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return json.loads(raw)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return None
    return credential


def _check_loopback(host: str) -> None:
    if host in _LOOPBACK_NAMES:
        return
    try:
        is_loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loopback = False
    if not is_loopback:
        raise ValueError(f"the ICR emulator only listens on loopback addresses, not {host!r}")


class EmulatorServer:
    """A running emulator: where to reach it, and how to stop it."""

    def __init__(
        self,
        *,
        emulator: ICREmulator,
        runner: web.AppRunner,
        state: _AppState,
        host: str,
        port: int,
        scheme: str,
        ca_pem: str | None,
    ) -> None:
        self.emulator = emulator
        self.host = host
        self.port = port
        url_host = f"[{host}]" if ":" in host else host
        self.url = f"{scheme}://{url_host}:{port}"
        """The base URL to give the SDK, e.g. ``http://127.0.0.1:54321``."""
        self.ca_pem = ca_pem
        """With ``tls=True``: the PEM of the CA that signed the server certificate."""
        self._runner = runner
        self._state = state
        self._closed = False
        self._cleanups: list[Callable[[], None]] = []

    def client_ssl_context(self) -> ssl.SSLContext | None:
        """An SSL context trusting this server's CA (``None`` for plain HTTP)."""
        if self.ca_pem is None:
            return None
        return ssl.create_default_context(cadata=self.ca_pem)

    async def close(self) -> None:
        """Stop listening, wake hanging fault handlers and close connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._state.stopping.set()
        try:
            await self._runner.cleanup()
        finally:
            for cleanup in reversed(self._cleanups):
                cleanup()

    def __repr__(self) -> str:
        return f"EmulatorServer(url={self.url!r})"


class ICREmulator:
    """An in-memory ICR Apps API with real RS256 JWT checks, fault injection and statistics.

    All state lives in this object; :meth:`serve` (or :meth:`make_app`) exposes it over HTTP.
    Time is ``clock() + skew`` seconds ("server time"): share a
    :class:`~icr_async._clock.ManualClock` with the client to test expiry without sleeping.
    The controls below are plain attributes, settable at any moment of a test.
    """

    def __init__(
        self,
        *,
        clock: Clock = system_clock,
        seed: int = 0,
        installation_token_ttl: float = 7200.0,
        app_token_ttl: float = 3600.0,
        jwt_leeway: float = 30.0,
        page_end_style: PageEndStyle = "null",
        max_page_limit: int = 100,
        supported_api_versions: tuple[str, ...] = ("2023-06-16",),
    ) -> None:
        if page_end_style not in ("null", "absent"):
            raise ValueError("page_end_style must be 'null' or 'absent'")
        if max_page_limit < 1:
            raise ValueError("max_page_limit must be at least 1")
        self.clock: Clock = clock
        self.seed = seed
        self.skew: float = 0.0
        """Seconds added to ``clock()`` to get the server's time (its ``Date`` header too)."""
        self.installation_token_ttl = installation_token_ttl
        self.app_token_ttl = app_token_ttl
        self.jwt_leeway = jwt_leeway
        self.propagation_lag: float = 0.0
        """Tokens younger than this many server seconds are refused (replication lag)."""
        self.page_end_style: PageEndStyle = page_end_style
        self.max_page_limit = max_page_limit
        self.supported_api_versions = tuple(supported_api_versions)
        self.repeat_pages = False
        """When true, list endpoints ignore ``page`` and always serve page 0 (a broken server)."""
        self.base_url = "http://127.0.0.1"
        """Base of ``accessTokensUrl`` in objects returned by Python methods (set by serve)."""
        self.faults = FaultInjector(seed)
        self.stats = EmulatorStats()
        self.route_registrars: list[RouteRegistrar] = list(EXTRA_ROUTE_REGISTRARS)
        """Callbacks :meth:`make_app` runs to add extra routes (see the module docstring)."""

        self._data = DataFactory(seed)
        self._apps: dict[str, _AppRecord] = {}
        self._created_apps: list[EmulatorApp] = []
        self._installations: dict[str, _InstallationRecord] = {}
        self._organizations: dict[str, dict[str, Any]] = {}
        self._org_bodies: dict[str, bytes] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, AccessTokenRecord] = {}
        self._jwt_cache: dict[str, _VerifiedJWT] = {}
        self._projects: list[bytes] = [_dumps(p) for p in self._data.projects()]
        self._date_second: int | None = None
        self._date_text = ""
        # Imported here: both modules import this one (and register their routes on import).
        from ._ledger import Ledger
        from ._webhook_delivery import WebhookSender

        self.ledger: Ledger = Ledger(self)
        """Organizations' credits, credit requests and reservations (see ``_ledger.py``)."""
        self.webhooks: WebhookSender = WebhookSender(self)
        """Signed webhook delivery to a loopback URL, off until ``webhooks.configure()``."""

    # ----------------------------------------------------------------------------- time

    def server_now(self) -> float:
        """The server's current time: ``clock() + skew``."""
        return self.clock() + self.skew

    def _http_date(self) -> str:
        second = int(self.server_now())
        if second != self._date_second:
            # formatdate costs microseconds; the cache makes it once per server second.
            self._date_second = second
            self._date_text = email.utils.formatdate(second, usegmt=True)
        return self._date_text

    # ----------------------------------------------------------------------------- apps

    @property
    def default_app(self) -> EmulatorApp:
        """The first app made with :meth:`create_app` (the pytest fixture makes one)."""
        if not self._created_apps:
            raise LookupError("no app has been created with create_app() yet")
        return self._created_apps[0]

    @property
    def apps(self) -> list[EmulatorApp]:
        """Every app made with :meth:`create_app`, oldest first."""
        return list(self._created_apps)

    def create_app(
        self, installations: int = 0, *, bits: int = 2048, private_key_pem: str | None = None
    ) -> EmulatorApp:
        """Register a new app with a fresh key pair and ``installations`` installations.

        Pass ``private_key_pem`` to reuse a key (RSA generation costs ~0.1 s per key).
        """
        pem = generate_private_key_pem(bits) if private_key_pem is None else private_key_pem
        app_id = self.add_app(pem, installations=installations)
        app = EmulatorApp(
            app_id=app_id, private_key_pem=pem, app_name_id=self._apps[app_id].app_name_id
        )
        self._created_apps.append(app)
        return app

    def add_app(
        self, public_key_pem: str | bytes, *, app_id: str | None = None, installations: int = 0
    ) -> str:
        """Register an app by its public key (a private key PEM is accepted too); return its id."""
        app_id = self._data.uuid() if app_id is None else app_id
        if app_id in self._apps:
            raise ValueError(f"app {app_id} already exists")
        self._apps[app_id] = _AppRecord(app_id=app_id, app_name_id=self._data.app_name_id())
        self.add_app_key(app_id, public_key_pem)
        for _ in range(installations):
            self.add_installation(app_id)
        return app_id

    def _app(self, app_id: str) -> _AppRecord:
        try:
            return self._apps[app_id]
        except KeyError:
            raise KeyError(f"unknown app {app_id!r}") from None

    def add_app_key(self, app_id: str, public_key_pem: str | bytes) -> None:
        """Add a live key to an app; several live keys model a key rotation."""
        canonical = canonical_public_pem(public_key_pem)
        self._app(app_id).keys[canonical] = RSAKey.import_key(canonical)

    def remove_app_key(self, app_id: str, public_key_pem: str | bytes) -> None:
        """Revoke one of an app's keys; JWTs signed with it stop working at once."""
        canonical = canonical_public_pem(public_key_pem)
        keys = self._app(app_id).keys
        if canonical not in keys:
            raise KeyError("that key is not registered for this app")
        del keys[canonical]
        # Cached verifications may rest on the removed key.
        self._jwt_cache.clear()

    # --------------------------------------------------------------------- installations

    def add_installation(
        self,
        app_id: str,
        *,
        permissions: dict[str, str] | None = None,
        organization: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Install ``app_id`` on an organization and return the installation JSON as served.

        ``organization`` overrides fields of the generated organization; if it names the
        ``id`` of an existing organization, the app is installed on that organization.
        """
        app = self._app(app_id)
        org = self._organization_for(organization)
        created = self._data.past_timestamp()
        record = _InstallationRecord(
            id=self._data.uuid(),
            app_id=app_id,
            app_name_id=app.app_name_id,
            organization_id=org["id"],
            permissions=dict(DEFAULT_PERMISSIONS if permissions is None else permissions),
            created_at=iso(created),
            updated_at=iso(created + 3600),
        )
        self._store_installation(record)
        return self._installation_json(record, self.base_url)

    def _organization_for(
        self, organization: dict[str, Any] | None, *, created: float | None = None
    ) -> dict[str, Any]:
        if organization is not None and organization.get("id") in self._organizations:
            org = self._organizations[organization["id"]]
            org.update(organization)
            self.touch_organization(org["id"])
            return org
        org = self._data.organization(organization, created=created)
        self._organizations[org["id"]] = org
        return org

    def _store_installation(self, record: _InstallationRecord) -> None:
        self._installations[record.id] = record
        self._apps[record.app_id].installation_ids.append(record.id)
        self.webhooks.notify_installation("installed", record)

    def remove_installation(self, installation_id: str) -> None:
        """Uninstall: the installation disappears from list/get and its tokens stop working."""
        record = self._installations.pop(installation_id, None)
        if record is None:
            raise KeyError(f"unknown installation {installation_id!r}")
        self._apps[record.app_id].installation_ids.remove(installation_id)
        self.revoke_tokens(installation_id)
        self.webhooks.notify_installation("uninstalled", record)

    def installations(self, app_id: str) -> list[dict[str, Any]]:
        """The app's installations as ``GET /app/installations`` would list them."""
        return [
            self._installation_json(self._installations[i], self.base_url)
            for i in self._app(app_id).installation_ids
        ]

    def organization(self, organization_id: str) -> dict[str, Any]:
        """The stored organization object (live: mutate it, then call :meth:`touch_organization`)."""
        try:
            return self._organizations[organization_id]
        except KeyError:
            raise KeyError(f"unknown organization {organization_id!r}") from None

    def touch_organization(self, organization_id: str) -> None:
        """Drop cached serializations after an organization object was changed in place."""
        self.organization(organization_id)  # KeyError for an unknown id
        self._org_bodies.pop(organization_id, None)
        for record in self._installations.values():
            if record.organization_id == organization_id:
                record.cache_base = None

    def _installation_body(self, record: _InstallationRecord, base: str) -> bytes:
        if record.cache_base != base:
            data = {
                "id": record.id,
                "createdAt": record.created_at,
                "updatedAt": record.updated_at,
                "permissions": record.permissions,
                "appNameId": record.app_name_id,
                "appId": record.app_id,
                "accessTokensUrl": f"{base}/app/installations/{record.id}/accessTokens",
                "organization": self._organizations[record.organization_id],
            }
            record.cache_body = _dumps(data)
            record.cache_base = base
        return record.cache_body

    def _installation_json(self, record: _InstallationRecord, base: str) -> dict[str, Any]:
        # Parsing the cached body returns a deep copy callers may mutate freely.
        result: dict[str, Any] = json.loads(self._installation_body(record, base))
        return result

    def _organization_body(self, organization_id: str) -> bytes:
        body = self._org_bodies.get(organization_id)
        if body is None:
            body = self._org_bodies[organization_id] = _dumps(self._organizations[organization_id])
        return body

    # ---------------------------------------------------------------------------- tokens

    def _mint(self, app_id: str, installation: _InstallationRecord | None) -> AccessTokenRecord:
        now = self.server_now()
        if installation is None:
            ttl, permissions, org_id = self.app_token_ttl, {}, None
        else:
            ttl = self.installation_token_ttl
            permissions = dict(installation.permissions)
            org_id = installation.organization_id
        record = AccessTokenRecord(
            token="crs_" + secrets.token_hex(24),
            id=str(uuid.uuid4()),
            app_id=app_id,
            installation_id=None if installation is None else installation.id,
            organization_id=org_id,
            permissions=permissions,
            created_at=now,
            expires_at=now + ttl,
        )
        self._tokens[record.token] = record
        return record

    def _matching_tokens(self, installation_id: str | None) -> list[AccessTokenRecord]:
        return [
            record
            for record in self._tokens.values()
            if installation_id is None or record.installation_id == installation_id
        ]

    def expire_tokens(self, installation_id: str | None = None) -> None:
        """Expire tokens server-side now (one installation's, or every token with ``None``)."""
        for record in self._matching_tokens(installation_id):
            record.expired = True

    def revoke_tokens(self, installation_id: str | None = None) -> None:
        """Revoke tokens server-side (one installation's, or every token with ``None``)."""
        for record in self._matching_tokens(installation_id):
            record.revoked = True

    def token_record(self, token: str) -> AccessTokenRecord | None:
        """The server-side record of an access token string, if it was ever minted."""
        return self._tokens.get(token)

    def reset_stats(self) -> None:
        """Zero every counter in :attr:`stats`."""
        self.stats.reset()

    # ---------------------------------------------------------------------- authentication

    def _reject_jwt(self, reason: str, message: str) -> NoReturn:
        self.stats.jwt_rejections[reason] += 1
        raise EmulatorHTTPError(401, message)

    def authenticate_app(self, request: web.Request) -> str:
        """Check the request's app JWT for real and return the app id; 401 otherwise."""
        token = _bearer(request)
        if token is None:
            self._reject_jwt("missing", "Missing bearer token")
        verified = self._jwt_cache.get(token)
        if verified is None:
            verified = self._verify_jwt(token)
            if len(self._jwt_cache) >= _JWT_CACHE_SIZE:
                self._jwt_cache.clear()
            self._jwt_cache[token] = verified
        # Time-dependent checks run on every use: a cached JWT still expires.
        now = self.server_now()
        if verified.exp <= now:
            self._reject_jwt("expired", "JWT expired")
        if verified.iat > now + self.jwt_leeway:
            self._reject_jwt("iat_in_future", "JWT issued in the future (iat)")
        return verified.app_id

    def _verify_jwt(self, token: str) -> _VerifiedJWT:
        parts = token.split(".")
        if len(parts) != 3:
            self._reject_jwt("malformed", "Malformed JWT")
        try:
            header = _b64url_json(parts[0])
            claims = _b64url_json(parts[1])
        except (ValueError, binascii.Error):
            self._reject_jwt("malformed", "Malformed JWT")
        if not isinstance(header, dict) or not isinstance(claims, dict):
            self._reject_jwt("malformed", "Malformed JWT")
        alg = header.get("alg")
        if alg != "RS256":
            self._reject_jwt("algorithm", f"Unsupported JWT algorithm {alg!r}: RS256 is required")
        iss = claims.get("iss")
        app = self._apps.get(iss) if isinstance(iss, str) else None
        if app is None:
            self._reject_jwt("unknown_app", "Unknown app (iss)")
        if not self._signature_ok(token, app):
            self._reject_jwt("signature", "Invalid JWT signature")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not (_is_int(iat) and _is_int(exp)):
            self._reject_jwt("claims", "JWT claims iat and exp must be integers")
        assert isinstance(iat, int)
        assert isinstance(exp, int)
        if exp - iat > MAX_JWT_LIFETIME:
            self._reject_jwt("lifetime", "JWT lifetime exceeds 10 minutes")
        return _VerifiedJWT(app_id=app.app_id, iat=iat, exp=exp)

    @staticmethod
    def _signature_ok(token: str, app: _AppRecord) -> bool:
        for key in app.keys.values():
            try:
                jwt.decode(token, key, algorithms=["RS256"])
            except BadSignatureError:
                continue
            except JoseError:
                return False
            return True
        return False

    def _reject_token(self, reason: str, message: str) -> NoReturn:
        self.stats.token_rejections[reason] += 1
        raise EmulatorHTTPError(401, message)

    def authenticate_token(self, request: web.Request) -> AccessTokenRecord:
        """Check the request's access token (installation or app); 401 otherwise."""
        token = _bearer(request)
        if token is None:
            self._reject_token("missing", "Missing bearer token")
        record = self._tokens.get(token)
        if record is None:
            self._reject_token("unknown", "Invalid access token")
        if record.revoked:
            self._reject_token("revoked", "Access token has been revoked")
        now = self.server_now()
        if record.expired or now >= record.expires_at:
            self._reject_token("expired", "Access token expired")
        if now - record.created_at < self.propagation_lag:
            self._reject_token("propagation", "Invalid access token")
        return record

    def authenticate_installation(
        self,
        request: web.Request,
        organization_id: str,
        permission: str | None = "organization_info",
        level: str | None = None,
    ) -> AccessTokenRecord:
        """Check an installation token for ``organization_id`` holding ``permission``.

        Any level satisfies ``level=None`` (read access); ``level="WRITE"`` demands exactly
        ``WRITE``. Answers 401 for a bad token and 403 for the wrong organization, an app
        token, or a missing permission.
        """
        record = self.authenticate_token(request)
        if record.installation_id is None:
            raise EmulatorHTTPError(403, "This resource requires an installation access token")
        if record.organization_id != organization_id:
            raise EmulatorHTTPError(
                403, "The access token does not grant access to this organization"
            )
        if permission is not None:
            granted = record.permissions.get(permission)
            if granted is None or (level is not None and granted != level):
                needed = permission if level is None else f"{permission}:{level}"
                raise EmulatorHTTPError(403, f"Missing permission: {needed}")
        return record

    # --------------------------------------------------------------------------- helpers

    @staticmethod
    def json_response(data: Any, status: int = 200) -> web.Response:
        """A JSON response (``bytes`` are sent as already-serialized JSON)."""
        body = data if isinstance(data, bytes) else _dumps(data)
        return web.Response(status=status, body=body, content_type=_JSON_CT, charset="utf-8")

    def _int_param(
        self,
        request: web.Request,
        name: str,
        default: int,
        low: int,
        high: int | None,
        errors: list[str],
    ) -> int:
        raw = request.query.get(name)
        if raw is None:
            return default
        if not _INT_RE.fullmatch(raw):
            errors.append(f"{name} must be an integer number")
            return default
        value = int(raw)
        if value < low:
            errors.append(f"{name} must not be less than {low}")
        elif high is not None and value > high:
            errors.append(f"{name} must not be greater than {high}")
        return value

    def page_params(self, request: web.Request) -> tuple[int, int]:
        """Validated ``(page, limit)`` from the query (defaults 0 and 10); 400 otherwise."""
        errors: list[str] = []
        limit = self._int_param(request, "limit", 10, 1, self.max_page_limit, errors)
        page = self._int_param(request, "page", 0, 0, None, errors)
        if errors:
            raise EmulatorHTTPError(400, errors)
        return page, limit

    def paginated_response(
        self,
        request: web.Request,
        key: str,
        items: Sequence[Any],
        render: Callable[[Any], Any] | None = None,
    ) -> web.Response:
        """Serve one page of ``items`` under ``key`` with ICR's ``pagination`` object.

        Only the items on the page pass through ``render`` (to JSON-able data or ``bytes``),
        so listing stays cheap however long the list is.
        """
        page, limit = self.page_params(request)
        if self.repeat_pages:
            page = 0
        total = len(items)
        page_count = -(-total // limit)
        next_page = page + 1 if page < page_count - 1 else None
        prev_page = page - 1 if page > 0 else None
        pagination: dict[str, Any] = {
            "total": total,
            "currentPage": page,
            "pageCount": page_count,
        }
        keep_nulls = self.page_end_style == "null"
        if next_page is not None or keep_nulls:
            pagination["nextPage"] = next_page
        if prev_page is not None or keep_nulls:
            pagination["prevPage"] = prev_page
        start = page * limit
        parts: list[bytes] = []
        for item in items[start : start + limit]:
            data = item if render is None else render(item)
            parts.append(data if isinstance(data, bytes) else _dumps(data))
        body = b"".join(
            (
                b'{"pagination":',
                _dumps(pagination),
                b",",
                _dumps(key),
                b":[",
                b",".join(parts),
                b"]}",
            )
        )
        return self.json_response(body)

    @staticmethod
    async def read_json_object(request: web.Request, *, allow_empty: bool = False) -> Any:
        """The request body as a JSON object (``{}`` for an empty body if allowed); 400 otherwise."""
        raw = await request.read()
        if not raw.strip():
            if allow_empty:
                return {}
            raise EmulatorHTTPError(400, "Request body must be a JSON object")
        try:
            data = json.loads(raw)
        except ValueError:
            raise EmulatorHTTPError(400, "Request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise EmulatorHTTPError(400, "Request body must be a JSON object")
        return data

    @staticmethod
    def _base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    # ---------------------------------------------------------------------------- routes

    async def _create_app_token(self, request: web.Request) -> web.StreamResponse:
        app_id = self.authenticate_app(request)
        record = self._mint(app_id, None)
        self.stats.app_token_mints += 1
        return self.json_response(record.to_json())

    def _app_installation(self, request: web.Request, app_id: str) -> _InstallationRecord:
        record = self._installations.get(request.match_info["installationId"])
        if record is None or record.app_id != app_id:
            raise EmulatorHTTPError(404, "Installation not found")
        return record

    async def _create_installation_token(self, request: web.Request) -> web.StreamResponse:
        app_id = self.authenticate_app(request)
        installation = self._app_installation(request, app_id)
        await self.read_json_object(request, allow_empty=True)
        record = self._mint(app_id, installation)
        self.stats.mints[installation.id] += 1
        return self.json_response(record.to_json())

    async def _revoke_token(self, request: web.Request) -> web.StreamResponse:
        record = self.authenticate_token(request)
        record.revoked = True
        self.stats.revocations += 1
        return self.json_response(b"true")

    async def _list_installations(self, request: web.Request) -> web.StreamResponse:
        app_id = self.authenticate_app(request)
        base = self._base(request)
        installations = self._installations

        def render(installation_id: str) -> bytes:
            return self._installation_body(installations[installation_id], base)

        ids = self._apps[app_id].installation_ids
        return self.paginated_response(request, "installations", ids, render)

    async def _get_installation(self, request: web.Request) -> web.StreamResponse:
        app_id = self.authenticate_app(request)
        record = self._app_installation(request, app_id)
        return self.json_response(self._installation_body(record, self._base(request)))

    async def _create_user_organization(self, request: web.Request) -> web.StreamResponse:
        app_id = self.authenticate_app(request)
        body = await self.read_json_object(request)
        user_in, org_in = _validate_create_org(body)
        now = self.server_now()
        user = self._users.get(user_in["email"])
        if user is None:
            user = {
                "id": self._data.uuid(),
                "email": user_in["email"],
                "fullName": user_in.get("fullName"),
                "profilePicture": user_in.get("profilePicture"),
                "createdAt": iso(now),
                "updatedAt": iso(now),
            }
            self._users[user["email"]] = user
        overrides = {"isPublic": False, "updatedAt": iso(now), **org_in}
        org = self._organization_for(overrides, created=now)
        record = _InstallationRecord(
            id=self._data.uuid(),
            app_id=app_id,
            app_name_id=self._apps[app_id].app_name_id,
            organization_id=org["id"],
            permissions=dict(DEFAULT_PERMISSIONS),
            created_at=iso(now),
            updated_at=iso(now),
        )
        self._store_installation(record)
        result = {
            "user": user,
            "organization": org,
            "installation": self._installation_json(record, self._base(request)),
        }
        return self.json_response(result, status=201)

    async def _get_organization(self, request: web.Request) -> web.StreamResponse:
        organization_id = request.match_info["organizationId"]
        self.authenticate_installation(request, organization_id, "organization_info")
        return self.json_response(self._organization_body(organization_id))

    async def _list_projects(self, request: web.Request) -> web.StreamResponse:
        self.authenticate_token(request)
        return self.paginated_response(request, "projects", self._projects)

    def _register_core_routes(self, app: web.Application) -> None:
        router = app.router
        # The literal "token" path must precede the {installationId} pattern.
        router.add_delete("/app/installations/token", self._revoke_token, name="revoke_token")
        router.add_post("/app/accessTokens", self._create_app_token, name="create_app_token")
        router.add_post(
            "/app/installations/{installationId}/accessTokens",
            self._create_installation_token,
            name="create_installation_token",
        )
        router.add_get(
            "/app/installations",
            self._list_installations,
            name="list_installations",
            allow_head=False,
        )
        router.add_get(
            "/app/installations/{installationId}",
            self._get_installation,
            name="get_installation",
            allow_head=False,
        )
        router.add_post(
            "/app/create/user/organization",
            self._create_user_organization,
            name="create_user_organization",
        )
        router.add_get(
            "/organizations/{organizationId}",
            self._get_organization,
            name="get_organization",
            allow_head=False,
        )
        router.add_get("/projects", self._list_projects, name="list_projects", allow_head=False)

    # ------------------------------------------------------------------------ middleware

    async def _on_response_prepare(
        self, _request: web.Request, response: web.StreamResponse
    ) -> None:
        # Responses returned through the middleware already carry both headers. This hook
        # catches those prepared elsewhere (e.g. streamed by an extension's handler), whose
        # Date aiohttp has just filled from the real clock: replace it with server time.
        headers = response.headers
        if "x-request-id" not in headers:
            headers["x-request-id"] = secrets.token_hex(12)
            headers["Date"] = self._http_date()

    def _stamp(self, response: web.StreamResponse) -> web.StreamResponse:
        # Set before prepare(): aiohttp keeps a Date header that is already present, and a
        # fault's own Date / x-request-id headers stay untouched.
        headers = response.headers
        if "Date" not in headers:
            headers["Date"] = self._http_date()
        if "x-request-id" not in headers:
            headers["x-request-id"] = secrets.token_hex(12)
        return response

    async def _handle(
        self, state: _AppState, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        method = request.method
        self.stats.requests[(method, request.match_info.route.name or "unmatched")] += 1
        if method == "POST" and not request.path.startswith("/app/"):
            self.stats.posts[(request.path, await request.read())] += 1
        if self.faults:
            fault = self.faults.select(method, request.path)
            if fault is not None:
                response = await self._apply_fault(state, fault, request, handler)
                return response if response.prepared else self._stamp(response)
        return self._stamp(await self._dispatch(request, handler))

    async def _dispatch(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            version = request.headers.get("x-icr-api-version")
            if version is not None and version not in self.supported_api_versions:
                raise EmulatorHTTPError(400, f"Unsupported API version: {version}")
            return await handler(request)
        except EmulatorHTTPError as error:
            return error.to_response()
        except web.HTTPException as error:
            if error.status in (404, 405):
                # NestJS answers unknown routes and wrong methods alike.
                return EmulatorHTTPError(
                    404, f"Cannot {request.method} {request.path}"
                ).to_response()
            return EmulatorHTTPError(error.status, error.reason).to_response()

    @staticmethod
    async def _wait_stopping(state: _AppState, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(state.stopping.wait(), seconds)

    async def _apply_fault(
        self, state: _AppState, fault: Fault, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if fault.delay > 0:
            await self._wait_stopping(state, fault.delay)
        action = fault.action
        if action == "delay":
            return await self._dispatch(request, handler)
        if action == "status":
            return _status_fault_response(fault)
        if action == "nonjson":
            return web.Response(
                status=200,
                text="<!DOCTYPE html><html><head><title>Bad Gateway</title></head>"
                "<body><h1>502 Bad Gateway</h1></body></html>",
                content_type="text/html",
            )
        if action == "hang":
            await self._wait_stopping(state, _HANG_LIMIT)
            if state.stopping.is_set():
                # Shutting down: still never answer, just drop the connection.
                _abort(request)
                return web.Response(status=504)
            return EmulatorHTTPError(504, "Gateway Timeout").to_response()
        # The remaining actions act on the real answer: the server did the work.
        response = await self._dispatch(request, handler)
        if action == "wrong_content_type":
            response.content_type = "text/plain"
            return response
        assert isinstance(response, web.Response)
        body = response.body if isinstance(response.body, bytes) else b""
        transport = request.transport
        if action == "reset":
            # The head goes out, then the connection dies before any body byte.
            head = (
                f"HTTP/1.1 {response.status} {response.reason}\r\n"
                f"Content-Type: {response.content_type}\r\n"
                f"Content-Length: {max(len(body), 1)}\r\n"
                f"Date: {self._http_date()}\r\n\r\n"
            )
            if transport is not None:
                transport.write(head.encode("latin-1"))
            _abort(request)
            return web.Response(status=response.status)
        # truncate: promise the whole body, send half, close.
        stream = web.StreamResponse(status=response.status, reason=response.reason)
        self._stamp(stream)
        stream.content_type = response.content_type
        stream.content_length = max(len(body), 2)
        await stream.prepare(request)
        await stream.write(body[: len(body) // 2] or b"{")
        if transport is not None:
            transport.close()
        return stream

    # ---------------------------------------------------------------------------- serving

    def make_app(self) -> web.Application:
        """A fresh :class:`aiohttp.web.Application` serving this emulator's state."""
        state = _AppState()

        @web.middleware
        async def emulator_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self._handle(state, request, handler)

        async def on_shutdown(_app: web.Application) -> None:
            state.stopping.set()

        app = web.Application(middlewares=[emulator_middleware])
        app[_STATE_KEY] = state
        app.on_response_prepare.append(self._on_response_prepare)
        app.on_shutdown.append(on_shutdown)
        self._register_core_routes(app)
        for register in self.route_registrars:
            register(self, app)
        return app

    @contextlib.asynccontextmanager
    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, tls: bool = False
    ) -> AsyncIterator[EmulatorServer]:
        """Serve the emulator on loopback for the duration of an ``async with`` block.

        ``port=0`` picks a free port (read it from ``server.port`` / ``server.url``). With
        ``tls=True`` a throwaway CA (``trustme``) signs a certificate for 127.0.0.1, ::1 and
        localhost; trust ``server.ca_pem`` in the client.
        """
        server = await self.start(host, port, tls=tls)
        try:
            yield server
        finally:
            await server.close()

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, tls: bool = False
    ) -> EmulatorServer:
        """Like :meth:`serve` without the context manager: call ``await server.close()``."""
        _check_loopback(host)
        ssl_context: ssl.SSLContext | None = None
        ca_pem: str | None = None
        if tls:
            ssl_context, ca_pem = _make_tls()
        app = self.make_app()
        # handler_cancellation: a client that gives up must also end a "hang" handler.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=5.0
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
            await site.start()
            bound_port = int(runner.addresses[0][1])
        except BaseException:
            await runner.cleanup()
            raise
        server = EmulatorServer(
            emulator=self,
            runner=runner,
            state=app[_STATE_KEY],
            host=host,
            port=bound_port,
            scheme="https" if tls else "http",
            ca_pem=ca_pem,
        )
        if tls:
            server._cleanups.append(_filter_handshake_errors(asyncio.get_running_loop()))
        self.base_url = server.url
        return server


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


_INCOMING_CONNECTION_ERROR = "Error on transport creation for incoming connection"


def _filter_handshake_errors(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Silence failed TLS handshakes of incoming connections while the server runs.

    In debug mode asyncio reports every failed server-side handshake to the loop's exception
    handler, and test runners (anyio's among them) turn that into a test error. A client
    that refuses the throwaway certificate is exactly what TLS tests check, so those
    reports are dropped; everything else reaches the previous handler. Returns the undo.
    """
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if context.get("message") == _INCOMING_CONNECTION_ERROR and isinstance(
            error, (ConnectionError, ssl.SSLError)
        ):
            return
        if previous is None:
            loop.default_exception_handler(context)
        else:
            previous(loop, context)

    loop.set_exception_handler(handler)

    def restore() -> None:
        # Only undo our own handler: someone may have replaced it since.
        if loop.get_exception_handler() is handler:
            loop.set_exception_handler(previous)

    return restore


def _make_tls() -> tuple[ssl.SSLContext, str]:
    # Imported here: trustme is a test-only dependency, needed only with tls=True.
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "::1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context, str(ca.cert_pem.bytes().decode("ascii"))


def _status_fault_response(fault: Fault) -> web.Response:
    status = fault.status
    headers: CIMultiDict[str] = CIMultiDict(fault.headers)
    if fault.retry_after is not None:
        headers["Retry-After"] = fault.retry_after
    content_type = headers.pop("Content-Type", None)
    body: bytes
    if status in (204, 304):
        return web.Response(status=status, headers=headers)
    if fault.body is None:
        body = nest_error_body(status)
    elif isinstance(fault.body, dict):
        body = _dumps(fault.body)
    elif isinstance(fault.body, str):
        body = fault.body.encode("utf-8")
    else:
        body = fault.body
    if content_type is None:
        try:
            json.loads(body)
        except ValueError:
            content_type = "text/plain"
        else:
            content_type = _JSON_CT
    headers["Content-Type"] = content_type
    return web.Response(status=status, body=body, headers=headers)


_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_COUNTRY_RE = re.compile(r"[A-Z]{2}")


def _validate_create_org(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate ``POST /app/create/user/organization`` like NestJS class-validator would."""
    errors: list[str] = []
    user = body.get("user")
    org = body.get("organization")
    user_out: dict[str, Any] = {}
    org_out: dict[str, Any] = {}
    if not isinstance(user, dict):
        errors.append("user must be an object")
    else:
        email = user.get("email")
        if not isinstance(email, str) or not _EMAIL_RE.fullmatch(email):
            errors.append("user.email must be an email")
        else:
            user_out["email"] = email
        for name in ("fullName", "profilePicture"):
            value = user.get(name)
            if value is not None and not isinstance(value, str):
                errors.append(f"user.{name} must be a string")
            elif value is not None:
                user_out[name] = value
    if not isinstance(org, dict):
        errors.append("organization must be an object")
    else:
        full_name = org.get("fullName")
        if not isinstance(full_name, str):
            errors.append("organization.fullName must be a string")
        elif not full_name.strip():
            errors.append("organization.fullName should not be empty")
        else:
            org_out["fullName"] = full_name
        org_type = org.get("type")
        if org_type not in ORGANIZATION_TYPES:
            errors.append(
                "organization.type must be one of the following values: "
                + ", ".join(ORGANIZATION_TYPES)
            )
        else:
            org_out["type"] = org_type
        country = org.get("countryCode")
        if country is not None:
            if not isinstance(country, str) or not _COUNTRY_RE.fullmatch(country):
                errors.append("organization.countryCode must be a valid ISO31661 Alpha2 code")
            else:
                org_out["countryCode"] = country
    if errors:
        raise EmulatorHTTPError(400, errors)
    return user_out, org_out
