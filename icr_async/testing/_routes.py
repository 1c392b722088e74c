"""ICR's app endpoints (shared/docs/icr-api.md, "The app endpoints") and public projects.

The organization, inventory and warehouse routes live in ``_ledger.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ._data import DEFAULT_PERMISSIONS, iso
from ._http import EmulatorHTTPError, validate_create_org
from ._records import InstallationRecord

if TYPE_CHECKING:
    from ._model import EmulatorModel

__all__ = ["register_core_routes"]


class _CoreRoutes:
    def __init__(self, emulator: EmulatorModel) -> None:
        self.emulator = emulator

    async def create_app_token(self, request: web.Request) -> web.StreamResponse:
        emulator = self.emulator
        app_id = emulator.authenticate_app(request)
        record = emulator._mint(app_id, None)
        emulator.stats.app_token_mints += 1
        return emulator.created_response(record.to_json())

    def _app_installation(self, request: web.Request, app_id: str) -> InstallationRecord:
        record = self.emulator._installations.get(request.match_info["installationId"])
        if record is None or record.app_id != app_id:
            raise EmulatorHTTPError(404, "Installation not found")
        return record

    async def create_installation_token(self, request: web.Request) -> web.StreamResponse:
        emulator = self.emulator
        app_id = emulator.authenticate_app(request)
        installation = self._app_installation(request, app_id)
        await emulator.read_json_object(request, allow_empty=True)
        record = emulator._mint(app_id, installation)
        emulator.stats.mints[installation.id] += 1
        return emulator.created_response(record.to_json())

    async def revoke_token(self, request: web.Request) -> web.StreamResponse:
        emulator = self.emulator
        record = emulator.authenticate_token(request)
        record.revoked = True
        emulator.stats.revocations += 1
        return emulator.json_response(b"true")

    async def list_installations(self, request: web.Request) -> web.StreamResponse:
        emulator = self.emulator
        app_id = emulator.authenticate_app(request)
        base = _base(request)
        installations = emulator._installations

        def render(installation_id: str) -> bytes:
            return emulator._installation_body(installations[installation_id], base)

        ids = emulator._apps[app_id].installation_ids
        return emulator.paginated_response(request, "installations", ids, render)

    async def get_installation(self, request: web.Request) -> web.StreamResponse:
        emulator = self.emulator
        app_id = emulator.authenticate_app(request)
        record = self._app_installation(request, app_id)
        return emulator.json_response(emulator._installation_body(record, _base(request)))

    async def create_user_organization(self, request: web.Request) -> web.StreamResponse:
        emulator = self.emulator
        app_id = emulator.authenticate_app(request)
        body = await emulator.read_json_object(request)
        user_in, org_in = validate_create_org(body)
        now = emulator.server_now()
        user = emulator._users.get(user_in["email"])
        if user is None:
            user = {
                "id": emulator._data.uuid(),
                "email": user_in["email"],
                "fullName": user_in.get("fullName"),
                "profilePicture": user_in.get("profilePicture"),
                "createdAt": iso(now),
                "updatedAt": iso(now),
            }
            emulator._users[user["email"]] = user
        overrides = {"isPublic": False, "updatedAt": iso(now), **org_in}
        org = emulator._organization_for(overrides, created=now)
        record = InstallationRecord(
            id=emulator._data.uuid(),
            app_id=app_id,
            app_name_id=emulator._apps[app_id].app_name_id,
            organization_id=org["id"],
            permissions=dict(DEFAULT_PERMISSIONS),
            created_at=iso(now),
            updated_at=iso(now),
        )
        emulator._store_installation(record)
        result = {
            "user": user,
            "organization": org,
            "installation": emulator._installation_json(record, _base(request)),
        }
        return emulator.created_response(result)

    async def get_organization(self, request: web.Request) -> web.StreamResponse:
        emulator = self.emulator
        organization_id = request.match_info["organizationId"]
        emulator.authenticate_installation(request, organization_id, "organization_info")
        return emulator.json_response(emulator._organization_body(organization_id))

    async def list_projects(self, request: web.Request) -> web.StreamResponse:
        emulator = self.emulator
        emulator.authenticate_token(request)
        return emulator.paginated_response(request, "projects", emulator._projects)


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def register_core_routes(emulator: EmulatorModel, app: web.Application) -> None:
    """Add the app endpoints and ``/projects`` to ``app`` (route names are stats keys)."""
    routes = _CoreRoutes(emulator)
    router = app.router
    # The literal "token" path must precede the {installationId} pattern.
    router.add_delete("/app/installations/token", routes.revoke_token, name="revoke_token")
    router.add_post("/app/accessTokens", routes.create_app_token, name="create_app_token")
    router.add_post(
        "/app/installations/{installationId}/accessTokens",
        routes.create_installation_token,
        name="create_installation_token",
    )
    router.add_get(
        "/app/installations",
        routes.list_installations,
        name="list_installations",
        allow_head=False,
    )
    router.add_get(
        "/app/installations/{installationId}",
        routes.get_installation,
        name="get_installation",
        allow_head=False,
    )
    router.add_post(
        "/app/create/user/organization",
        routes.create_user_organization,
        name="create_user_organization",
    )
    router.add_get(
        "/organizations/{organizationId}",
        routes.get_organization,
        name="get_organization",
        allow_head=False,
    )
    router.add_get("/projects", routes.list_projects, name="list_projects", allow_head=False)
