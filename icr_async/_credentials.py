"""Who a request speaks as: the app JWT, a cached access token, or a token given by the caller.

Each strategy gives the credential for the next attempt and decides, on a 401, whether one
more attempt can help (and prepares it: re-sign, rotate the key, drop and re-mint the token,
or wait for a freshly minted token to replicate). They get what they need when they are
built — the JWT, the token manager, the clock — and never reach into a client.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from ._jwt import AppJWT, ClockSync
from ._redact import mask_token
from ._tokens import ClientStats, TokenManager
from ._transport import Response
from .errors import InvalidArgumentError
from .models import Token

__all__ = [
    "FRESH_TOKEN_WINDOW",
    "LAG_RETRY_DELAYS",
    "AttemptState",
    "Auth",
    "JWTAuth",
    "StaticAuth",
    "TokenAuth",
    "check_bearer",
]

logger = logging.getLogger("icr_async")

Sleep = Callable[[float], Awaitable[None]]

# A 401 this soon after a mint is most likely replication lag, not a bad token.
FRESH_TOKEN_WINDOW: Final = 10.0
LAG_RETRY_DELAYS: Final = (0.2, 0.5, 1.0)

# Words with which a 401 on a JWT blames time (clock skew, expiry), not the key.
_JWT_TIME_WORDS: Final = ("expired", "iat", "exp", "future", "not yet")
# ...or the app itself: another key of the same app cannot help.
_UNKNOWN_APP_RE: Final = re.compile(r"unknown app|\biss\b")
# Words with which a 401 says the token itself is dead (not merely unknown yet to a replica).
_DEAD_TOKEN_RE: Final = re.compile(rb"revoked|invalid|expired", re.IGNORECASE)


class AttemptState:
    """What one call has already tried on 401s (so recovery happens once, not forever)."""

    __slots__ = ("auth_retries", "lag_retries")

    def __init__(self) -> None:
        self.auth_retries: int = 0
        self.lag_retries: int = 0


class Auth(Protocol):
    """A credential strategy (see the module docstring)."""

    # The installation a credential speaks for (None: the app), e.g. the scope a back-off
    # pauses.
    installation_id: str | None

    def peek(self) -> str | None:
        """The bearer value for the next attempt when it is at hand (cached and fresh):
        the per-request path, with no coroutine; ``None`` sends the caller to ``credential``."""
        ...

    async def credential(self) -> str:
        """The bearer value for the next attempt, signed or minted if need be."""
        ...

    async def unauthorized(self, credential: str, resp: Response, state: AttemptState) -> bool:
        """After a 401 for ``credential``: whether to try once more (prepared already)."""
        ...


def check_bearer(value: object, what: str = "token") -> str:
    """``value`` if it can be a bearer credential; a masked token (``crs_…5517``, what
    ``str(token)`` gives) or anything with whitespace is refused with a clear error rather
    than sent as a header that can only be refused."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(f"{what} must be a non-empty access token string")
    if "…" in value:
        raise InvalidArgumentError(
            f"{what} is a masked token (str(token) hides the secret); pass the token object "
            "or token.token"
        )
    if any(c.isspace() for c in value) or not value.isprintable():
        raise InvalidArgumentError(f"{what} must not contain whitespace or control characters")
    return value


class JWTAuth:
    """The app JWT. A 401 recovers once: a clock or expiry complaint teaches the server's
    clock and re-signs; a refused key moves to the next signer of a rotation list."""

    __slots__ = ("_jwt", "_stats", "_sync")
    installation_id: str | None = None

    def __init__(self, jwt: AppJWT, sync: ClockSync, stats: ClientStats) -> None:
        self._jwt = jwt
        self._sync = sync
        self._stats = stats

    def peek(self) -> str | None:
        """The cached JWT, if it is not expiring."""
        return self._jwt.peek()

    async def credential(self) -> str:
        """The JWT, signed anew when missing or expiring (a remote signer — HSM, KMS — is
        awaited only then)."""
        return await self._jwt.get()

    async def unauthorized(self, credential: str, resp: Response, state: AttemptState) -> bool:
        """Learn the clock and re-sign, or rotate to the next key; once per call."""
        if state.auth_retries >= 1:
            return False
        jwt = self._jwt
        learned = self._sync.learn(resp.headers.get("Date"))
        if learned:
            self._stats.clock_skew_corrections += 1
        message = resp.content[:500].decode("utf-8", "replace").lower()
        about_time = any(word in message for word in _JWT_TIME_WORDS)
        if credential == jwt.current:
            # A learned clock with a vague message is a clock problem, not a reason to
            # abandon a key; a message that names the signature is about the key anyway.
            key_refused = (
                not about_time
                and _UNKNOWN_APP_RE.search(message) is None
                and (not learned or "signature" in message)
            )
            if not (key_refused and jwt.rotate(credential)):
                if not (learned or about_time):
                    # A bad signature with no other key to try: re-signing cannot help.
                    return False
                jwt.invalidate(credential)
        # else: another request already re-signed or rotated; retry with the current JWT.
        state.auth_retries += 1
        return True


class StaticAuth:
    """A bearer credential given by the caller (revoking a token; checked there with
    ``check_bearer``); never recovered."""

    __slots__ = ("_value",)
    installation_id: str | None = None

    def __init__(self, value: str) -> None:
        self._value = value

    def peek(self) -> str | None:
        """The caller's token, as given."""
        return self._value

    async def credential(self) -> str:
        """The caller's token, as given."""
        return self._value

    async def unauthorized(self, credential: str, resp: Response, state: AttemptState) -> bool:
        """Nothing to recover: the caller chose this token."""
        return False


def names_dead_token(body: bytes) -> bool:
    """Whether a 401's body says the token was revoked, is invalid or expired.

    Such a token will never work, so waiting for replication would only delay the re-mint
    (three retries, ~1.7 s); a 401 that names nothing is still given that grace.
    """
    return _DEAD_TOKEN_RE.search(body[:500]) is not None


class TokenAuth:
    """A cached installation or app token; a 401 drops it and mints once more."""

    # One per installation client, so it is kept small: the clock and the statistics are
    # the token manager's own.
    __slots__ = ("_last", "_sleep", "_tokens", "installation_id", "key")

    def __init__(
        self,
        tokens: TokenManager,
        key: str,
        installation_id: str | None,
        *,
        sleep: Sleep,
    ) -> None:
        self._tokens = tokens
        self.key: str = key
        self.installation_id: str | None = installation_id
        self._sleep = sleep
        self._last: Token | None = None

    def peek(self) -> str | None:
        """The cached token, if it is fresh."""
        token = self._tokens.peek_fresh(self.key)
        if token is None:
            return None
        self._last = token
        return token.token

    async def credential(self) -> str:
        """The token, minted (single flight) when missing or expiring."""
        token = await self._tokens.get(self.key, self.installation_id)
        self._last = token
        return token.token

    async def unauthorized(self, credential: str, resp: Response, state: AttemptState) -> bool:
        """Give a fresh token time to replicate, else drop it and mint once more."""
        last = self._last
        if (
            not names_dead_token(resp.content)
            and last is not None
            and last.token == credential
            and self._tokens.clock() - last._minted < FRESH_TOKEN_WINDOW
            and state.lag_retries < len(LAG_RETRY_DELAYS)
        ):
            # Freshly minted and already refused: give replication a moment, same token.
            delay = LAG_RETRY_DELAYS[state.lag_retries]
            state.lag_retries += 1
            logger.debug(
                "401 for a token minted %.1f s ago; retrying in %.1f s",
                self._tokens.clock() - last._minted,
                delay,
            )
            await self._sleep(delay)
            return True
        if state.auth_retries >= 1:
            return False
        state.auth_retries += 1
        self._tokens.stats.recoveries_401 += 1
        logger.info(
            "the server refused the cached token %s for %s; minting a new one",
            mask_token(credential),
            f"installation {self.installation_id}" if self.installation_id else "the app",
        )
        await self._tokens.invalidate(self.key, credential)
        return True
