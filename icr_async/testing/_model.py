"""The in-memory ICR behind the emulator: its state and everything it does, but no serving.

:class:`EmulatorModel` holds the apps, installations, organizations and tokens, the server's
clock, the options (``_options.py``), and the helpers route handlers answer with. The
collaborators it owns (``_auth.py``, ``_ledger.py``, ``_webhook_delivery.py``) see it only
through the small protocols they declare, and the HTTP side (``_server.py``, the route
modules, and :class:`~icr_async.testing.ICREmulator` in ``_emulator.py``, which adds serving)
is built on top of it, so no module here imports one that imports it back.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import secrets
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from joserfc.jwk import RSAKey

from icr_async._clock import Clock, system_clock

from ._auth import Authenticator
from ._crypto import canonical_public_pem, generate_private_key_pem
from ._data import DEFAULT_PERMISSIONS, DataFactory, iso
from ._faults import FaultInjector, RateLimiter
from ._http import JSON_CT, EmulatorHTTPError, dumps
from ._ledger import Ledger
from ._options import (
    DEFAULT_REQUEST_ID_HEADER,
    Option,
    PageBase,
    PageEndStyle,
    PostStatus,
    RetryAfterStyle,
    check_clock_offset,
    check_page_base,
    check_page_end_style,
    check_post_status,
    check_request_id_header,
    check_retry_after_style,
    check_ttl,
)
from ._pagination import page_window
from ._records import AccessTokenRecord, AppRecord, EmulatorApp, InstallationRecord
from ._stats import EmulatorStats
from ._webhook_delivery import WebhookSender

__all__ = ["EmulatorModel"]

_INT_RE = re.compile(r"-?\d{1,18}")
_SECONDS_RE = re.compile(r"\d{1,12}(\.\d{1,9})?")


def _ttl_option(name: str) -> Option[float]:
    return Option(lambda value: check_ttl(value, name))


class EmulatorModel:
    """The state and behaviour of :class:`~icr_async.testing.ICREmulator`, which documents it."""

    page_base: Option[PageBase] = Option(check_page_base)
    page_end_style: Option[PageEndStyle] = Option(check_page_end_style)
    post_status: Option[PostStatus] = Option(check_post_status)
    clock_offset: Option[float] = Option(check_clock_offset)
    installation_token_ttl: Option[float] = _ttl_option("installation_token_ttl")
    app_token_ttl: Option[float] = _ttl_option("app_token_ttl")
    retry_after_style: Option[RetryAfterStyle] = Option(check_retry_after_style)
    request_id_header: Option[str | None] = Option(check_request_id_header)

    def __init__(
        self,
        *,
        clock: Clock = system_clock,
        seed: int = 0,
        page_base: PageBase = 0,
        page_end_style: PageEndStyle = "null",
        post_status: PostStatus = 200,
        clock_offset: float = 0.0,
        installation_token_ttl: float = 7200.0,
        app_token_ttl: float = 3600.0,
        retry_after_style: RetryAfterStyle = "seconds",
        request_id_header: str | None = DEFAULT_REQUEST_ID_HEADER,
        jwt_leeway: float = 30.0,
        max_page_limit: int = 100,
        supported_api_versions: tuple[str, ...] = ("2023-06-16",),
    ) -> None:
        if max_page_limit < 1:
            raise ValueError("max_page_limit must be at least 1")
        self.clock: Clock = clock
        self.seed = seed
        self.page_base = page_base
        self.page_end_style = page_end_style
        self.post_status = post_status
        self.clock_offset = clock_offset
        self.installation_token_ttl = installation_token_ttl
        self.app_token_ttl = app_token_ttl
        self.retry_after_style = retry_after_style
        self.request_id_header = request_id_header
        self.jwt_leeway = jwt_leeway
        """Seconds of clock drift allowed on a JWT's ``iat`` and ``exp`` checks."""
        self.propagation_lag: float = 0.0
        """Tokens younger than this many server seconds are refused (replication lag)."""
        self.max_page_limit = max_page_limit
        self.supported_api_versions: tuple[str, ...] = tuple(supported_api_versions)
        self.repeat_pages = False
        """When true, list endpoints ignore ``page`` and always serve the first page."""
        self.base_url = "http://127.0.0.1"
        """Base of ``accessTokensUrl`` in objects returned by Python methods (set by serve)."""
        self.faults: FaultInjector = FaultInjector(seed)
        self.rate_limiter: RateLimiter = RateLimiter()
        """A request limit per app or installation (off until ``rate_limiter.limit`` is set)."""
        self.stats: EmulatorStats = EmulatorStats()

        self._data = DataFactory(seed)
        self._apps: dict[str, AppRecord] = {}
        self._created_apps: list[EmulatorApp] = []
        self._installations: dict[str, InstallationRecord] = {}
        self._organizations: dict[str, dict[str, Any]] = {}
        self._org_bodies: dict[str, bytes] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, AccessTokenRecord] = {}
        self._auth = Authenticator(self, apps=self._apps, tokens=self._tokens)
        self._projects: list[bytes] = [dumps(p) for p in self._data.projects()]
        self._date_second: int | None = None
        self._date_text = ""
        # The sender first: the ledger reports its transactions through it.
        self.webhooks: WebhookSender = WebhookSender(self, installations=self._installations)
        """Signed webhook delivery to a loopback URL, off until ``webhooks.configure()``."""
        self.ledger: Ledger = Ledger(self)
        """Organizations' credits, credit requests and reservations (see ``_ledger.py``)."""

    # ----------------------------------------------------------------------------- time

    @property
    def skew(self) -> float:
        """The same as :attr:`clock_offset` (its older name)."""
        return self.clock_offset

    @skew.setter
    def skew(self, value: float) -> None:
        self.clock_offset = value

    def server_now(self) -> float:
        """The server's current time: ``clock() + clock_offset``."""
        return self.clock() + self.clock_offset

    def http_date(self, at: float | None = None) -> str:
        """An HTTP date (``Date`` header form) of server time ``at``, by default now."""
        if at is not None:
            return email.utils.formatdate(at, usegmt=True)
        second = int(self.server_now())
        if second != self._date_second:
            # formatdate costs microseconds; the cache makes it once per server second.
            self._date_second = second
            self._date_text = email.utils.formatdate(second, usegmt=True)
        return self._date_text

    def retry_after_value(self, retry_after: str | float) -> str:
        """The ``Retry-After`` header for a wait of ``retry_after`` seconds, in the style set.

        A string that is not a number of seconds (an HTTP date, or garbage a test sends on
        purpose) is sent as it is. An HTTP date is on the server's clock, rounded up so a
        client that waits until it never comes back early.
        """
        if isinstance(retry_after, str):
            if not _SECONDS_RE.fullmatch(retry_after):
                return retry_after
            seconds = float(retry_after)
            text = retry_after
        else:
            seconds = float(retry_after)
            text = str(int(seconds)) if seconds.is_integer() else f"{seconds:g}"
        if self.retry_after_style == "seconds":
            return text
        return self.http_date(math.ceil(self.server_now() + seconds))

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
        self._apps[app_id] = AppRecord(app_id=app_id, app_name_id=self._data.app_name_id())
        self.add_app_key(app_id, public_key_pem)
        for _ in range(installations):
            self.add_installation(app_id)
        return app_id

    def _app(self, app_id: str) -> AppRecord:
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
        self._auth.clear_cache()

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
        record = InstallationRecord(
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

    def _store_installation(self, record: InstallationRecord) -> None:
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

    def _installation_body(self, record: InstallationRecord, base: str) -> bytes:
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
            record.cache_body = dumps(data)
            record.cache_base = base
        return record.cache_body

    def _installation_json(self, record: InstallationRecord, base: str) -> dict[str, Any]:
        # Parsing the cached body returns a deep copy callers may mutate freely.
        result: dict[str, Any] = json.loads(self._installation_body(record, base))
        return result

    def _organization_body(self, organization_id: str) -> bytes:
        body = self._org_bodies.get(organization_id)
        if body is None:
            body = self._org_bodies[organization_id] = dumps(self._organizations[organization_id])
        return body

    # ---------------------------------------------------------------------------- tokens

    def _mint(self, app_id: str, installation: InstallationRecord | None) -> AccessTokenRecord:
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
        """Zero every counter in :attr:`stats` (and the rate limiter's record of 429s)."""
        self.stats.reset()
        self.rate_limiter.reset()

    # ---------------------------------------------------------------------- authentication

    def authenticate_app(self, request: web.Request) -> str:
        """Check the request's app JWT for real and return the app id; 401 otherwise."""
        return self._auth.app(request)

    def authenticate_token(self, request: web.Request) -> AccessTokenRecord:
        """Check the request's access token (installation or app); 401 otherwise."""
        return self._auth.token(request)

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
        return self._auth.installation(request, organization_id, permission, level)

    # --------------------------------------------------------------------------- helpers

    @staticmethod
    def json_response(data: Any, status: int = 200) -> web.Response:
        """A JSON response (``bytes`` are sent as already-serialized JSON)."""
        body = data if isinstance(data, bytes) else dumps(data)
        return web.Response(status=status, body=body, content_type=JSON_CT, charset="utf-8")

    def created_response(self, data: Any) -> web.Response:
        """The JSON answer of a successful POST, with the :attr:`post_status` set."""
        return self.json_response(data, status=self.post_status)

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
        window = page_window(
            len(items),
            page,
            limit,
            base=self.page_base,
            end_style=self.page_end_style,
            repeat=self.repeat_pages,
        )
        pagination = window.pagination
        parts: list[bytes] = []
        for item in items[window.start : window.stop]:
            data = item if render is None else render(item)
            parts.append(data if isinstance(data, bytes) else dumps(data))
        body = b"".join(
            (
                b'{"pagination":',
                dumps(pagination),
                b",",
                dumps(key),
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
