"""ICR's access-token answer, and the one way it becomes a ``Token``.

``POST /app/accessTokens`` and ``POST /app/installations/{id}/accessTokens`` answer with the
same object (the installation's adds ``installationId`` and ``organizationId``).
``AccessTokenAnswer`` reads it exactly as sent, on the server's clock; ``token_from_answer``
places its expiry on this machine's clock and keeps everything else. ``create_app_token()``,
``create_installation_token()`` and the token cache all go through it, so a token is the
same whichever way it was asked for.

A cached token lives for hours, and a fleet job caches one per installation, so the parts
that repeat from token to token (the app id, the permission set, a ``updatedAt`` equal to
``createdAt``) are shared rather than copied per token.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Mapping
from typing import Any

import attrs

from ._dates import OneOffDatetime
from ._redact import mask_token
from .models import _NO_EXTRA, Permissions, Token

__all__ = ["AccessTokenAnswer", "share_permissions", "token_from_answer"]

_UTC = datetime.timezone.utc
_SHARED_MAX = 256
_shared: dict[frozenset[tuple[str, str]], Permissions] = {}


@attrs.frozen(kw_only=True)
class AccessTokenAnswer:
    """ICR's access token object as sent (``expires_at`` on the server's clock); unknown
    keys land in ``extra``. Private: callers get a ``Token``."""

    token: str = attrs.field(repr=lambda value: repr(mask_token(value)))
    # A token's dates are its own: read without the shared date memo (see OneOffDatetime).
    expires_at: OneOffDatetime
    id: str | None = None
    created_at: OneOffDatetime | None = None
    updated_at: OneOffDatetime | None = None
    is_active: bool = True
    permissions: Permissions = attrs.field(factory=Permissions)
    app_id: str | None = None
    installation_id: str | None = None
    organization_id: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


def share_permissions(permissions: Permissions) -> Permissions:
    """One ``Permissions`` object for every token with the same grants (they are immutable).

    An app's installations mostly hold the app's one permission set; a cache of thousands
    of tokens then keeps one copy, not thousands. Bounded: past ``_SHARED_MAX`` distinct
    sets a new one is simply not shared.
    """
    key = frozenset(permissions.items())
    shared = _shared.get(key)
    if shared is not None:
        return shared
    if len(_shared) < _SHARED_MAX:
        _shared[key] = permissions
    return permissions


def token_from_answer(
    answer: AccessTokenAnswer, *, installation_id: str | None, now: float, server_now: float
) -> Token:
    """The ``Token`` for an answer received at ``now`` (this machine's clock) while the
    server's clock read ``server_now`` (its ``Date``, or the learned offset).

    ``installation_id`` is the one asked for (the cache key is built from it); the answer's
    own is the fallback.
    """
    expires = now + (answer.expires_at.timestamp() - server_now)
    created, updated = answer.created_at, answer.updated_at
    if updated is not None and updated == created:
        updated = created
    return Token(
        token=answer.token,
        expires_at=datetime.datetime.fromtimestamp(expires, tz=_UTC),
        installation_id=installation_id if installation_id is not None else answer.installation_id,
        organization_id=answer.organization_id,
        permissions=share_permissions(answer.permissions),
        minted_at=datetime.datetime.fromtimestamp(now, tz=_UTC),
        id=answer.id,
        created_at=created,
        updated_at=updated,
        is_active=answer.is_active,
        app_id=None if answer.app_id is None else sys.intern(answer.app_id),
        extra=answer.extra or _NO_EXTRA,
    )
