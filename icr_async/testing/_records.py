"""The emulator's stored records: apps, installations and minted access tokens."""

from __future__ import annotations

from typing import Any

import attrs
from joserfc.jwk import RSAKey

from ._data import iso

__all__ = ["AccessTokenRecord", "AppRecord", "EmulatorApp", "InstallationRecord"]


@attrs.frozen
class EmulatorApp:
    """An app registered with :meth:`ICREmulator.create_app`, with the key to sign its JWTs."""

    app_id: str
    private_key_pem: str = attrs.field(repr=False)
    app_name_id: str


@attrs.define
class AccessTokenRecord:
    """Server-side state of one minted access token (installation or app token).

    ``revoked`` (``DELETE /app/installations/token`` or ``revoke_tokens()``) and ``expired``
    (``expire_tokens()``) are answered with different 401 messages, as is a token still
    inside the emulator's ``propagation_lag``.
    """

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


@attrs.define
class AppRecord:
    """An app as the server stores it: its live public keys and its installations."""

    app_id: str
    app_name_id: str
    keys: dict[str, RSAKey] = attrs.field(factory=dict)
    installation_ids: list[str] = attrs.field(factory=list)


@attrs.define
class InstallationRecord:
    """One installation of an app on an organization."""

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
