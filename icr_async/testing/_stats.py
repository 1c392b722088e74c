"""Counters the emulator keeps so tests can assert on what a client actually sent."""

from __future__ import annotations

from collections import Counter

import attrs

__all__ = ["EmulatorStats"]


@attrs.define
class EmulatorStats:
    """What the emulator has seen since it started or since :meth:`reset`.

    ``requests`` is keyed by ``(method, route name)``, e.g. ``("POST",
    "create_installation_token")``; requests no route matched count as ``"unmatched"``.
    ``posts`` records every POST outside ``/app/`` as ``(path, raw body)`` on arrival, before
    faults, so a soak test can prove that no credit action was ever sent twice.

    ``jwt_rejections`` counts refused app JWTs by reason: ``missing``, ``malformed``,
    ``algorithm`` (not RS256), ``unknown_app``, ``signature``, ``claims`` (``iat``/``exp`` not
    integers), ``expired``, ``iat_in_future`` and ``exp_too_far`` (``exp`` more than ten
    minutes, plus the leeway, ahead of the server's clock). ``token_rejections`` counts refused
    access tokens: ``missing``, ``unknown``, ``revoked``, ``expired`` and ``propagation``
    (minted less than ``propagation_lag`` seconds ago).
    """

    requests: Counter[tuple[str, str]] = attrs.field(factory=Counter)
    mints: Counter[str] = attrs.field(factory=Counter)
    app_token_mints: int = 0
    revocations: int = 0
    jwt_rejections: Counter[str] = attrs.field(factory=Counter)
    token_rejections: Counter[str] = attrs.field(factory=Counter)
    posts: Counter[tuple[str, bytes]] = attrs.field(factory=Counter)
    rate_limited: int = 0
    """Requests answered 429 by the emulator's rate limit (not by a fault)."""

    @property
    def total_requests(self) -> int:
        """Every request received, whatever its outcome."""
        return sum(self.requests.values())

    @property
    def duplicate_posts(self) -> int:
        """How many POSTs repeated an earlier one byte for byte (0 for a well-behaved client)."""
        return sum(count - 1 for count in self.posts.values() if count > 1)

    def reset(self) -> None:
        """Zero every counter in place (references to this object stay valid)."""
        self.requests.clear()
        self.mints.clear()
        self.app_token_mints = 0
        self.revocations = 0
        self.jwt_rejections.clear()
        self.token_rejections.clear()
        self.posts.clear()
        self.rate_limited = 0
