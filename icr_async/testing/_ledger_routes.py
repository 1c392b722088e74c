"""The ledger's HTTP surface: ICR's exact organization paths (shared/docs/icr-api.md) served
from :class:`~icr_async.testing._ledger.Ledger`'s state.

Split from ``_ledger.py`` so that module holds the bookkeeping and this one the routes. Every
answer goes through ``emulator.json_response`` / ``created_response`` / ``paginated_response``
so the emulator's options (``post_status``, ``page_base``, ``page_end_style``) apply here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from aiohttp import web

from ._http import EmulatorHTTPError
from ._ledger_records import (
    RequestRecord,
    ReservationRecord,
    certificate_pdf,
    validate_credit_action,
    validate_finish,
    validate_reservation,
)

if TYPE_CHECKING:
    from ._ledger import Ledger
    from ._model import EmulatorModel
    from ._records import AccessTokenRecord

__all__ = ["CREDIT_ACTIONS", "RESERVATION_ACTIONS", "LedgerRoutes", "register_ledger_routes"]

CREDIT_ACTIONS: Final = ("transfer", "retire", "transfer_retire", "cancel")
RESERVATION_ACTIONS: Final = ("transfer", "retire", "transfer_retire")
_WRITE_LEVELS: Final = frozenset({"WRITE", "READ_WRITE"})


class LedgerRoutes:
    """The route handlers of one emulator's ledger."""

    def __init__(self, emulator: EmulatorModel) -> None:
        self.emulator = emulator
        self.ledger: Ledger = emulator.ledger

    def _reserver_name(self, record: AccessTokenRecord) -> str | None:
        # The app's name as ICR shows it to the organization; the emulator's apps have only
        # their appNameId, read from the public installation listing.
        for installation in self.emulator.installations(record.app_id):
            if installation.get("id") == record.installation_id:
                name = installation.get("appNameId")
                return None if name is None else str(name)
        return None

    def _authorize(
        self, request: web.Request, permission: str, *, write: bool = False
    ) -> tuple[str, str, AccessTokenRecord]:
        """Authenticate for the path's organization; return (org id, level, token record)."""
        org_id = request.match_info["organizationId"]
        record = self.emulator.authenticate_installation(request, org_id, permission)
        level = record.permissions[permission].upper()
        if (
            write
            and level not in _WRITE_LEVELS
            and not (permission == "organization_inventory" and level == "REQUEST")
        ):
            raise EmulatorHTTPError(403, f"Missing permission: {permission}:WRITE")
        self.ledger._ensure(org_id)
        return org_id, level, record

    async def _addresses_route(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_info")
        return self.emulator.json_response(self.ledger._addresses[org_id])

    async def _retirements_route(self, request: web.Request) -> web.StreamResponse:
        # ICR's demo reads data.retirements: an object, never a bare list.
        org_id, _, _ = self._authorize(request, "organization_info")
        items = [self.ledger._retirement_json(r) for r in self.ledger._retirements[org_id]]
        return self.emulator.json_response({"retirements": items})

    async def _retirement_pdf(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_info")
        wanted = request.match_info["retirementId"]
        for retirement in self.ledger._retirements[org_id]:
            if retirement.id == wanted:
                shown = {
                    **self.ledger._retirement_json(retirement),
                    "createdAt": retirement.created_at,
                }
                return web.Response(body=certificate_pdf(shown), content_type="application/pdf")
        raise EmulatorHTTPError(404, f"Retirement {wanted} not found")

    async def _inventory(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_inventory")
        credits = [
            self.ledger._catalog[credit_id].credit_json(org_id, amount)
            for credit_id, amount in self.ledger._holdings[org_id].items()
        ]
        return self.emulator.json_response({"credits": credits, "organizationId": org_id})

    async def _warehouse_inventory(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_warehouse")
        credits = []
        for credit_id in self.ledger._holdings[org_id]:
            free = self.ledger.available(org_id, credit_id)
            if free > 0:
                meta = self.ledger._catalog[credit_id]
                inventory_id = self.ledger._inventory_id(org_id, credit_id)
                credits.append(meta.warehouse_json(org_id, inventory_id, free))
        return self.emulator.json_response({"credits": credits, "organizationId": org_id})

    async def _list_requests(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_inventory")
        items = [r for r in self.ledger._requests.values() if r.organization_id == org_id]
        return self.emulator.paginated_response(
            request, "creditRequests", items, self.ledger._request_json
        )

    async def _get_request(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_inventory")
        req = self.ledger._requests.get(request.match_info["requestId"])
        if req is None or req.organization_id != org_id:
            raise EmulatorHTTPError(404, "Credit request not found")
        return self.emulator.json_response(self.ledger._request_json(req))

    async def _credit_action(self, request: web.Request) -> web.StreamResponse:
        action = request.match_info["action"]
        if action not in CREDIT_ACTIONS:
            raise EmulatorHTTPError(404, f"Cannot POST {request.path}")
        org_id, level, token = self._authorize(request, "organization_inventory", write=True)
        body = await self.emulator.read_json_object(request)
        fields = validate_credit_action(action, body)
        credit_id, amount = fields["creditId"], fields["amount"]
        to_org, to_address = fields.get("toOrganizationId"), fields.get("toAddress")
        now = self.emulator.server_now()
        if level == "REQUEST":
            # Checked now so an impossible request fails at once, executed on approval.
            self.ledger._check_available(org_id, credit_id, amount)
        # A retire or cancel stays with the organization itself; a transfer names its
        # receiver (an address's owner for toAddress).
        receiver = (
            self.ledger._receiver(to_org, to_address)
            if to_org is not None or to_address is not None
            else org_id
        )
        req = RequestRecord(
            id=self.ledger._new_id(),
            action=action,
            state="Pending",
            organization_id=org_id,
            installation_id=token.installation_id,
            credit_id=credit_id,
            amount=amount,
            to_organization_id=to_org,
            to_address=to_address,
            receiver=receiver,
            retirement_data=fields.get("retirementData"),
            created_at=now,
            updated_at=now,
        )
        if level != "REQUEST":
            transaction = self.ledger._execute(
                org_id,
                action,
                credit_id,
                amount,
                to_organization_id=to_org,
                to_address=to_address,
                retirement_data=req.retirement_data,
                links={"creditRequestId": req.id},
            )
            req.state = "Completed"
            req.tx_id = transaction["txId"]
        self.ledger._requests[req.id] = req
        return self.emulator.created_response(self.ledger._request_json(req))

    def _own_reservation(self, request: web.Request, org_id: str) -> ReservationRecord:
        self.ledger._expire_lapsed()
        reservation = self.ledger._reservations.get(request.match_info["reservationId"])
        if (
            reservation is None
            or reservation.organization_id != org_id
            or reservation.status == "cancelled"
        ):
            raise EmulatorHTTPError(404, "Reservation not found")
        if reservation.status != "active":
            raise EmulatorHTTPError(409, f"Reservation is {reservation.status}")
        return reservation

    async def _list_reservations(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_warehouse")
        self.ledger._expire_lapsed()
        items = [
            r
            for r in self.ledger._reservations.values()
            if r.organization_id == org_id and r.status != "cancelled"
        ]
        return self.emulator.paginated_response(
            request, "reservations", items, self.ledger._reservation_json
        )

    async def _create_reservation(self, request: web.Request) -> web.StreamResponse:
        org_id, _, token = self._authorize(request, "organization_warehouse", write=True)
        body = await self.emulator.read_json_object(request)
        credit_id, owner, amount = validate_reservation(body)
        if owner != org_id:
            raise EmulatorHTTPError(403, "Cannot reserve credits of another organization")
        self.ledger._check_available(org_id, credit_id, amount)
        now = self.emulator.server_now()
        reservation = ReservationRecord(
            id=self.ledger._new_id(),
            credit_id=credit_id,
            organization_id=org_id,
            amount=amount,
            created_at=now,
            expires_at=now + self.ledger.reservation_ttl,
            reserver_id=token.app_id,
            reserver_name=self._reserver_name(token),
        )
        self.ledger._reservations[reservation.id] = reservation
        return self.emulator.created_response(self.ledger._reservation_json(reservation))

    async def _finish_reservation(self, request: web.Request) -> web.StreamResponse:
        action = request.match_info["action"]
        if action not in RESERVATION_ACTIONS:
            raise EmulatorHTTPError(404, f"Cannot POST {request.path}")
        org_id, _, _ = self._authorize(request, "organization_warehouse", write=True)
        reservation = self._own_reservation(request, org_id)
        body = await self.emulator.read_json_object(request)
        receiver, retirement = validate_finish(action, body)
        self.ledger._receiver(receiver, None)  # 404 before anything changes
        try:
            transaction = self.ledger._execute(
                org_id,
                action,
                reservation.credit_id,
                reservation.amount,
                to_organization_id=receiver,
                retirement_data=retirement,
                links={"reservationId": reservation.id},
                released=reservation,
            )
        except EmulatorHTTPError:
            reservation.status = "active"  # nothing moved: the hold stays
            raise
        reservation.action = action
        reservation.receiver_id = receiver
        reservation.finished_at = self.emulator.server_now()
        reservation.tx_id = transaction["txId"]
        return self.emulator.created_response(self.ledger._reservation_json(reservation))

    async def _cancel_reservation(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_warehouse", write=True)
        reservation = self._own_reservation(request, org_id)
        reservation.status = "cancelled"
        reservation.finished_at = self.emulator.server_now()
        return self.emulator.json_response(self.ledger._reservation_json(reservation))


def register_ledger_routes(emulator: EmulatorModel, app: web.Application) -> None:
    """Add the ledger's routes to an emulator application. Paths are ICR's exactly;
    ``/warehouse/reservations`` does not exist."""
    routes = LedgerRoutes(emulator)
    org = "/organizations/{organizationId}"
    reservations = f"{org}/warehouse/inventory/reservations"
    router = app.router
    router.add_get(
        f"{org}/addresses", routes._addresses_route, name="list_addresses", allow_head=False
    )
    router.add_get(
        f"{org}/retirements", routes._retirements_route, name="list_retirements", allow_head=False
    )
    router.add_get(
        f"{org}/retirements/{{retirementId}}/pdf",
        routes._retirement_pdf,
        name="get_retirement_pdf",
        allow_head=False,
    )
    router.add_get(f"{org}/inventory", routes._inventory, name="get_inventory", allow_head=False)
    router.add_get(
        f"{org}/inventory/requests",
        routes._list_requests,
        name="list_credit_requests",
        allow_head=False,
    )
    router.add_get(
        f"{org}/inventory/requests/{{requestId}}",
        routes._get_request,
        name="get_credit_request",
        allow_head=False,
    )
    router.add_post(
        f"{org}/inventory/requests/{{action}}", routes._credit_action, name="create_credit_action"
    )
    router.add_get(
        f"{org}/warehouse/inventory",
        routes._warehouse_inventory,
        name="get_warehouse_inventory",
        allow_head=False,
    )
    router.add_get(
        reservations, routes._list_reservations, name="list_reservations", allow_head=False
    )
    router.add_post(reservations, routes._create_reservation, name="create_reservation")
    router.add_post(
        f"{reservations}/{{reservationId}}/{{action}}",
        routes._finish_reservation,
        name="finish_reservation",
    )
    router.add_delete(
        f"{reservations}/{{reservationId}}",
        routes._cancel_reservation,
        name="cancel_reservation",
    )
