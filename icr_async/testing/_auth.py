"""Authentication as ICR does it: the app JWT (RS256) and access tokens.

The JWT rule follows shared/docs/icr-api.md: RS256, ``iss`` an app id, integer ``iat`` and
``exp``, and ``exp`` **at most ten minutes ahead of the server's clock** (plus
``jwt_leeway`` for drift). ``exp - iat`` is not limited: ICR's own demo app signs
``iat = now-60, exp = now+600`` and works against ICR. Extra claims (the demo puts ``alg`` in
the payload too) are ignored.

Access-token 401s say why, so a client can tell them apart: ``"Access token has been
revoked"``, ``"Access token expired"``, ``"Invalid access token"`` (never minted), and a
bare NestJS ``"Unauthorized"`` for a token minted less than ``propagation_lag`` seconds ago
(a replica that has not seen it yet names no reason: it cannot know one).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, NoReturn, Protocol

import attrs
from aiohttp import web
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError

from ._http import EmulatorHTTPError, bearer
from ._records import AccessTokenRecord, AppRecord
from ._stats import EmulatorStats

__all__ = [
    "MAX_JWT_EXP_AHEAD",
    "MESSAGE_EXPIRED",
    "MESSAGE_NOT_YET_REPLICATED",
    "MESSAGE_REVOKED",
    "AuthHost",
    "Authenticator",
]

MAX_JWT_EXP_AHEAD = 600
"""ICR refuses app JWTs whose ``exp`` is more than ten minutes ahead of its own clock."""

MESSAGE_REVOKED = "Access token has been revoked"
MESSAGE_EXPIRED = "Access token expired"
MESSAGE_NOT_YET_REPLICATED = "Unauthorized"

_JWT_CACHE_SIZE = 4096


@attrs.frozen
class _VerifiedJWT:
    app_id: str
    iat: int
    exp: int


def _b64url_json(segment: str) -> Any:
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return json.loads(raw)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class AuthHost(Protocol):
    """What the checks read of the emulator, live on every request (typed by use, so the
    emulator's module may import this one without this one importing it back)."""

    @property
    def jwt_leeway(self) -> float: ...

    @property
    def propagation_lag(self) -> float: ...

    @property
    def stats(self) -> EmulatorStats: ...

    def server_now(self) -> float: ...


class Authenticator:
    """Checks app JWTs and access tokens against an emulator's apps, tokens and clock.

    Rejections are counted in ``emulator.stats.jwt_rejections`` / ``token_rejections`` under
    the reasons listed in :class:`~icr_async.testing.EmulatorStats`.
    """

    def __init__(
        self,
        emulator: AuthHost,
        *,
        apps: Mapping[str, AppRecord],
        tokens: Mapping[str, AccessTokenRecord],
    ) -> None:
        self._emulator = emulator
        self._apps = apps
        self._tokens = tokens
        # Signature checks cost ~50 µs; a JWT is reused for minutes, so verify it once.
        self._cache: dict[str, _VerifiedJWT] = {}

    def clear_cache(self) -> None:
        """Forget verified JWTs (after a key was removed: they may rest on it)."""
        self._cache.clear()

    # ------------------------------------------------------------------------------ JWT

    def _reject_jwt(self, reason: str, message: str) -> NoReturn:
        self._emulator.stats.jwt_rejections[reason] += 1
        raise EmulatorHTTPError(401, message)

    def app(self, request: web.Request) -> str:
        """Check the request's app JWT for real and return the app id; 401 otherwise."""
        token = bearer(request)
        if token is None:
            self._reject_jwt("missing", "Missing bearer token")
        verified = self._cache.get(token)
        if verified is None:
            verified = self._verify(token)
            if len(self._cache) >= _JWT_CACHE_SIZE:
                self._cache.clear()
            self._cache[token] = verified
        # Time-dependent checks run on every use, on the server's clock: a cached JWT still
        # expires, and a clock moved back can make its exp too far ahead again.
        emulator = self._emulator
        now = emulator.server_now()
        leeway = emulator.jwt_leeway
        if verified.exp <= now:
            self._reject_jwt("expired", "JWT expired")
        if verified.iat > now + leeway:
            self._reject_jwt("iat_in_future", "JWT issued in the future (iat)")
        if verified.exp > now + MAX_JWT_EXP_AHEAD + leeway:
            self._reject_jwt("exp_too_far", "JWT exp must be at most 10 minutes in the future")
        return verified.app_id

    def _verify(self, token: str) -> _VerifiedJWT:
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
        if not _signature_ok(token, app):
            self._reject_jwt("signature", "Invalid JWT signature")
        iat, exp = claims.get("iat"), claims.get("exp")
        if not (_is_int(iat) and _is_int(exp)):
            self._reject_jwt("claims", "JWT claims iat and exp must be integers")
        assert isinstance(iat, int)
        assert isinstance(exp, int)
        return _VerifiedJWT(app_id=app.app_id, iat=iat, exp=exp)

    # ---------------------------------------------------------------------- access tokens

    def _reject_token(self, reason: str, message: str) -> NoReturn:
        self._emulator.stats.token_rejections[reason] += 1
        raise EmulatorHTTPError(401, message)

    def token(self, request: web.Request) -> AccessTokenRecord:
        """Check the request's access token (installation or app); 401 otherwise."""
        token = bearer(request)
        if token is None:
            self._reject_token("missing", "Missing bearer token")
        emulator = self._emulator
        record = self._tokens.get(token)
        if record is None:
            self._reject_token("unknown", "Invalid access token")
        if record.revoked:
            self._reject_token("revoked", MESSAGE_REVOKED)
        now = emulator.server_now()
        if record.expired or now >= record.expires_at:
            self._reject_token("expired", MESSAGE_EXPIRED)
        if now - record.created_at < emulator.propagation_lag:
            self._reject_token("propagation", MESSAGE_NOT_YET_REPLICATED)
        return record

    def installation(
        self,
        request: web.Request,
        organization_id: str,
        permission: str | None = "organization_info",
        level: str | None = None,
    ) -> AccessTokenRecord:
        """An installation token for ``organization_id`` holding ``permission``; 401/403."""
        record = self.token(request)
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


def _signature_ok(token: str, app: AppRecord) -> bool:
    for key in app.keys.values():
        try:
            jwt.decode(token, key, algorithms=["RS256"])
        except BadSignatureError:
            continue
        except JoseError:
            return False
        return True
    return False
