"""The app JWT: RS256, signed once and reused until it nears expiry.

A JWT is never signed per request: one is made with ``iat = now - 60`` (servers with a slow
clock would otherwise see it "from the future") and ``exp = iat + 600`` — the documented
ten-minute maximum measured from ``iat``, because whether ICR checks ``exp - iat`` is not
known — and reused for most of its life, which means one signature per app every seven to
eight minutes.

The SDK assembles the JWT (the header ``{"alg":"RS256","typ":"JWT"}``, the claims ``iss``,
``iat``, ``exp``, base64url) and delegates only the signature, to a ``Signer``:

* a local ``PrivateKey`` signs inline (~0.3 ms), exactly when the cached JWT has under a
  minute left: nothing is awaited, so on one event loop two callers can never sign at the
  same moment and single flight comes for free;
* any other signer (an HSM, a KMS) may take long or fail, so it is asked in a background
  task two minutes before expiry, one task at a time, while callers keep the cached JWT;
  only when no usable JWT is left do callers wait for that task. A failure is a
  ``SignerError`` naming the signer; after one, the signer is not asked again for
  ``SIGNER_RETRY_DELAY`` seconds (callers without a usable JWT fail fast meanwhile) so a
  dead KMS is not hammered once per request.

Several signers make a rotation list: the first signs, and :meth:`AppJWT.rotate` moves to
the next when the server refuses a JWT for its key.

"now" is the injected clock plus the learned offset to the server's clock (see
``ClockSync``), so a machine whose clock is minutes off still signs JWTs the server accepts
after one rejection.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from collections.abc import Sequence

from . import _fork
from ._clock import Clock, parse_http_date
from ._keys import PrivateKey
from ._signers import Signer, check_signers, describe_signer, sign_checked
from .errors import SignerError

__all__ = ["AppJWT", "ClockSync"]

logger = logging.getLogger("icr_async")

JWT_BACKDATE = 60
JWT_LIFETIME = 600  # exp - iat, the documented maximum
JWT_MIN_REMAINING = 60  # a local key re-signs below this
JWT_REFRESH_AHEAD = 120  # another signer is asked in the background below this
JWT_LAST_USE = 15  # below this a JWT is never sent: it could expire in flight
SIGN_TIMEOUT = 30.0  # a signer that has not answered by then has failed
SIGNER_RETRY_DELAY = 5.0  # after a failure, callers fail fast this long
SKEW_WARNING = 30.0

_HEADER = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').rstrip(b"=")


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class ClockSync:
    """The local clock corrected by the offset learned from the server's ``Date`` header."""

    __slots__ = ("clock", "offset")

    def __init__(self, clock: Clock) -> None:
        self.clock: Clock = clock
        self.offset: float = 0.0  # server time minus local time, in seconds

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
    """Makes and caches the app's RS256 JWT with one signer, or a rotation list of them."""

    __slots__ = (
        "_active",
        "_epoch",
        "_exp",
        "_jwt",
        "_jwt_signer",
        "_last_error",
        "_pending",
        "_pending_generation",
        "_renew_below",
        "_retry_at",
        "app_id",
        "rotations",
        "sign_timeout",
        "signatures",
        "signers",
        "sync",
    )

    def __init__(
        self,
        app_id: str,
        signer: Signer | Sequence[Signer],
        sync: ClockSync,
        *,
        sign_timeout: float | None = SIGN_TIMEOUT,
    ) -> None:
        self.app_id = app_id
        self.signers: tuple[Signer, ...] = check_signers(signer)
        self.sync = sync
        self.sign_timeout = sign_timeout
        self._active = 0
        self._jwt: str | None = None
        self._exp = 0.0
        self._jwt_signer = 0
        self._epoch = 0  # bumped whenever the cached JWT is dropped: late results are stale
        self._pending: asyncio.Task[str] | None = None
        self._pending_generation = 0
        self._last_error: SignerError | None = None
        self._retry_at = -math.inf
        self._renew_below = self._renew_threshold()
        self.signatures = 0
        self.rotations = 0

    @property
    def signer(self) -> Signer:
        """The signer in use: the first of the list until a rotation moves on."""
        return self.signers[self._active]

    @property
    def current(self) -> str | None:
        """The cached JWT, whatever its age (``None`` after a rejection or a rotation)."""
        return self._jwt

    def _renew_threshold(self) -> float:
        if isinstance(self.signers[self._active], PrivateKey):
            return JWT_MIN_REMAINING
        return JWT_REFRESH_AHEAD

    # -- the hot path ------------------------------------------------------------------

    def peek(self) -> str | None:
        """A usable JWT without awaiting anything, or ``None`` if the caller must wait.

        With a local key this always returns one (signing inline when needed). With another
        signer it starts the background signature when the JWT nears expiry, and returns
        ``None`` only when the cached JWT is gone or about to expire.
        """
        token = self._jwt
        left = 0.0
        if token is not None:
            left = self._exp - self.sync.now()
            if left >= self._renew_below:
                return token
        signer = self.signers[self._active]
        if isinstance(signer, PrivateKey):
            return self._sign_local(signer)
        if token is not None and left >= JWT_LAST_USE:
            self._refresh_in_background()
            return token
        return None

    async def get(self) -> str:
        """A JWT with life left, waiting for the signer only when there is none."""
        token = self.peek()
        if token is not None:
            return token
        pending = self._live_pending()
        if pending is None:
            last = self._last_error
            if last is not None and self.sync.clock() < self._retry_at:
                raise SignerError(
                    f"{last.message}; not asked again for {SIGNER_RETRY_DELAY:g} s",
                    key_id=last.key_id,
                    fingerprint=last.fingerprint,
                ) from last
            pending = self._start()
        # shield: one caller's cancellation must not cancel the signature others wait for.
        return await asyncio.shield(pending)

    # -- signing -------------------------------------------------------------------------

    def _times(self) -> tuple[int, int]:
        iat = int(self.sync.now()) - JWT_BACKDATE
        return iat, iat + JWT_LIFETIME

    def _signing_input(self, iat: int, exp: int) -> bytes:
        claims = json.dumps(
            {"iss": self.app_id, "iat": iat, "exp": exp}, ensure_ascii=False, separators=(",", ":")
        )
        return _HEADER + b"." + _b64url(claims.encode("utf-8"))

    def _install(self, token: str, exp: int, index: int) -> None:
        self._jwt = token
        self._exp = float(exp)
        self._jwt_signer = index
        self.signatures += 1

    def _sign_local(self, key: PrivateKey) -> str:
        iat, exp = self._times()
        signing_input = self._signing_input(iat, exp)
        token = (signing_input + b"." + _b64url(key.sign_now(signing_input))).decode("ascii")
        self._install(token, exp, self._active)
        logger.debug("signed a new app JWT (iat=%d, exp=%d)", iat, exp)
        return token

    def _live_pending(self) -> asyncio.Task[str] | None:
        pending = self._pending
        if pending is not None and self._pending_generation != _fork.generation:
            # Forked child: the task belongs to the parent's event loop.
            self._pending = pending = None
        return pending

    def _start(self) -> asyncio.Task[str]:
        task = asyncio.get_running_loop().create_task(self._sign_remote(self._active, self._epoch))
        self._pending = task
        self._pending_generation = _fork.generation
        task.add_done_callback(self._landed)
        return task

    def _refresh_in_background(self) -> None:
        if self._live_pending() is not None or self.sync.clock() < self._retry_at:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # peeked outside a loop (a test, a debugger): nothing to run on
            return
        self._start()

    def _landed(self, task: asyncio.Task[str]) -> None:
        if self._pending is task:
            self._pending = None
        if not task.cancelled():
            # Mark the exception as retrieved: a background refresh may have no waiter.
            task.exception()

    async def _sign_remote(self, index: int, epoch: int) -> str:
        signer = self.signers[index]
        iat, exp = self._times()
        signing_input = self._signing_input(iat, exp)
        try:
            signature = await sign_checked(
                signer, signing_input, timeout=self.sign_timeout, verify=True
            )
        except SignerError as exc:
            if epoch == self._epoch:  # not a signer already rotated away from
                self._last_error = exc
                self._retry_at = self.sync.clock() + SIGNER_RETRY_DELAY
            logger.warning("could not sign the app JWT: %s", exc.message)
            raise
        self._last_error = None
        token = (signing_input + b"." + _b64url(signature)).decode("ascii")
        if epoch == self._epoch:
            self._install(token, exp, index)
        else:
            self.signatures += 1
        logger.debug(
            "signed a new app JWT with %s (iat=%d, exp=%d)", describe_signer(signer), iat, exp
        )
        return token

    # -- recovery ------------------------------------------------------------------------

    def _drop(self) -> None:
        self._jwt = None
        self._exp = 0.0
        self._epoch += 1
        # A signature under way was started for the dropped JWT (old clock offset, old
        # key): let it finish for whoever waits on it, but start afresh for the others.
        self._pending = None

    def invalidate(self, rejected: str | None = None) -> None:
        """Forget the current JWT (only if it is ``rejected``, when that is given)."""
        if rejected is None or rejected == self._jwt:
            self._drop()

    def rotate(self, rejected: str) -> bool:
        """The server refused ``rejected`` for its key: sign with the next signer.

        Only a rejection of the current JWT moves on (concurrent requests that all carried
        it rotate once, not once each); ``False`` with a single signer or a stale JWT. The
        list is a ring: after the last signer comes the first again.
        """
        if len(self.signers) < 2 or rejected != self._jwt or self._jwt_signer != self._active:
            return False
        old = self.signers[self._active]
        self._active = (self._active + 1) % len(self.signers)
        self._renew_below = self._renew_threshold()
        self._last_error = None
        self._retry_at = -math.inf
        self.rotations += 1
        self._drop()
        logger.warning(
            "the server refused the app JWT signed with key %s; signing with the next key, %s",
            describe_signer(old),
            describe_signer(self.signers[self._active]),
        )
        return True

    def close(self) -> None:
        """Cancel a signature under way (the client is closing)."""
        pending = self._live_pending()
        self._pending = None
        if pending is not None and not pending.done():
            pending.cancel()

    def __repr__(self) -> str:
        return f"<AppJWT app_id={self.app_id!r} signatures={self.signatures}>"
