"""The app JWT: RS256, signed once and reused until it nears expiry.

Signing costs ~250-380 µs, so a JWT is never signed per request: one is made with
``iat = now - 60`` (servers with a slow clock would otherwise see it "from the future") and
``exp = iat + 600`` — the documented ten-minute maximum measured from ``iat``, because
whether ICR checks ``exp - iat`` is not known — and reused until it has under a minute left,
which means one signature per app every eight minutes.

"now" is the injected clock plus the learned offset to the server's clock (see
``ClockSync``), so a machine whose clock is minutes off still signs JWTs the server accepts
after one rejection.

Signing is synchronous and never awaits, so on one event loop two callers can never sign at
the same moment: single flight comes for free, and a JWT rejected by the server is dropped
only if it is still the current one.
"""

from __future__ import annotations

import logging

from joserfc import jwt

from ._clock import Clock, parse_http_date
from ._keys import PrivateKey

__all__ = ["AppJWT", "ClockSync"]

logger = logging.getLogger("icr_async")

JWT_BACKDATE = 60
JWT_LIFETIME = 600  # exp - iat, the documented maximum
JWT_MIN_REMAINING = 60
SKEW_WARNING = 30.0


class ClockSync:
    """The local clock corrected by the offset learned from the server's ``Date`` header."""

    __slots__ = ("clock", "offset")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.offset = 0.0  # server time minus local time, in seconds

    def now(self) -> float:
        """The server's time, as best we know it."""
        return self.clock() + self.offset

    def learn(self, date_header: str | None, *, min_change: float = 2.0) -> bool:
        """Adopt the offset shown by a ``Date`` header; ``True`` if it changed materially.

        ``Date`` has one-second resolution, so changes under ``min_change`` seconds are noise.
        """
        server = parse_http_date(date_header)
        if server is None:
            return False
        offset = server - self.clock()
        if abs(offset - self.offset) < min_change:
            return False
        self.offset = offset
        if abs(offset) > SKEW_WARNING:
            logger.warning(
                "the server clock differs from this machine's by %.0f s; "
                "using the server's time for JWTs and token expiry",
                offset,
            )
        return True


class AppJWT:
    """Makes and caches the app's RS256 JWT."""

    __slots__ = ("_exp", "_jwt", "app_id", "key", "signatures", "sync")

    def __init__(self, app_id: str, key: PrivateKey, sync: ClockSync) -> None:
        self.app_id = app_id
        self.key = key
        self.sync = sync
        self._jwt: str | None = None
        self._exp = 0.0
        self.signatures = 0

    def get(self) -> str:
        """A JWT with at least a minute of life left, signing a new one only when needed."""
        now = self.sync.now()
        if self._jwt is not None and self._exp - now >= JWT_MIN_REMAINING:
            return self._jwt
        iat = int(now) - JWT_BACKDATE
        exp = iat + JWT_LIFETIME
        token = jwt.encode(
            {"alg": "RS256", "typ": "JWT"},
            {"iss": self.app_id, "iat": iat, "exp": exp},
            self.key.jwk,
            algorithms=["RS256"],
        )
        self._jwt = token
        self._exp = float(exp)
        self.signatures += 1
        logger.debug("signed a new app JWT (iat=%d, exp=%d)", iat, exp)
        return token

    def invalidate(self, rejected: str | None = None) -> None:
        """Forget the current JWT (only if it is ``rejected``, when that is given)."""
        if rejected is None or rejected == self._jwt:
            self._jwt = None
            self._exp = 0.0

    def __repr__(self) -> str:
        return f"<AppJWT app_id={self.app_id!r} signatures={self.signatures}>"
