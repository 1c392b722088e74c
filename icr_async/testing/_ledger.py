"""The emulator's in-memory ledger: organizations' credits, credit requests, warehouse
reservations and retirements, served under ``/organizations/{id}/...``.

The rules it enforces (the emulator's reading where ICR's docs are silent):

* Permissions come from the installation token. Reads need the permission at any level
  (``organization_info`` for addresses and retirements, ``organization_inventory`` for the
  inventory and credit requests, ``organization_warehouse`` for the warehouse). A credit
  action with ``organization_inventory: WRITE`` is done at once (status ``completed``); with
  ``REQUEST`` it becomes a ``pending`` credit request until :meth:`Ledger.approve_request`;
  any other level is a 403. Reservations need ``organization_warehouse: WRITE``.
* Balances are real: a transfer moves credits to the receiving organization, a retire or a
  cancel burns them, ``transfer_retire`` moves then burns them in the receiver's name. Asking
  for more than is available (balance minus active reservations) is a **409**; a malformed
  body is a 400 with class-validator style messages; an unknown credit, organization,
  address, request or reservation is a 404.
* A reservation holds its amount for :attr:`Ledger.reservation_ttl` (600) seconds of
  emulator time (``server_now()``, so a shared ``ManualClock`` makes it lapse); a lapsed one
  is ``expired``, its amount free again, and finishing or cancelling it is a 409.
* Every organization starts, the first time the ledger sees it, with two credit holdings,
  one address and one past retirement, all derived from the emulator's seed and the
  organization's id (the same on every run).
* Completed credit actions deliver ``organizationTransaction`` webhooks, finished
  reservations ``warehouseTransaction`` webhooks, to the installations of every organization
  involved (see ``emulator.webhooks``).
"""

from __future__ import annotations

import decimal
import random
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import attrs
from aiohttp import web

from ._data import DataFactory, iso
from ._emulator import EXTRA_ROUTE_REGISTRARS, EmulatorHTTPError

if TYPE_CHECKING:
    from ._emulator import ICREmulator

__all__ = ["RESERVATION_TTL", "Ledger", "certificate_pdf", "register_routes"]

RESERVATION_TTL: Final = 600.0
"""Seconds a warehouse reservation holds its credits."""

CREDIT_ACTIONS: Final = ("transfer", "retire", "transfer_retire", "cancel")
RESERVATION_ACTIONS: Final = ("transfer", "retire", "transfer_retire")
_WRITE_LEVELS: Final = frozenset({"WRITE", "READ_WRITE"})
_CATALOG_SIZE: Final = 6
_MAX_AMOUNT: Final = Decimal(10) ** 12


def _num(value: Decimal) -> int | float:
    """A ledger amount as a JSON number: an int when whole."""
    return int(value) if value == value.to_integral_value() else float(value)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@attrs.define
class _Request:
    id: str
    type: str
    status: str
    organization_id: str
    installation_id: str | None
    credit_id: str
    amount: Decimal
    to_organization_id: str | None
    to_address: str | None
    retirement_data: dict[str, Any] | None
    created_at: float
    updated_at: float
    failure_reason: str | None = None
    transaction_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "status": self.status,
            "organizationId": self.organization_id,
            "creditId": self.credit_id,
            "amount": _num(self.amount),
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
        }
        for key, value in (
            ("toOrganizationId", self.to_organization_id),
            ("toAddress", self.to_address),
            ("retirementData", self.retirement_data),
            ("failureReason", self.failure_reason),
            ("transactionId", self.transaction_id),
        ):
            if value is not None:
                data[key] = value
        return data


@attrs.define
class _Reservation:
    id: str
    credit_id: str
    organization_id: str
    amount: Decimal
    created_at: float
    expires_at: float
    status: str = "active"
    action: str | None = None
    receiver_id: str | None = None
    finished_at: float | None = None
    transaction_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "creditId": self.credit_id,
            "organizationId": self.organization_id,
            "amount": _num(self.amount),
            "status": self.status,
            "createdAt": iso(self.created_at),
            "expiresAt": iso(self.expires_at),
        }
        for key, value in (
            ("action", self.action),
            ("receiverId", self.receiver_id),
            ("finishedAt", None if self.finished_at is None else iso(self.finished_at)),
            ("transactionId", self.transaction_id),
        ):
            if value is not None:
                data[key] = value
        return data


class Ledger:
    """The credits of every organization the emulator knows (``emulator.ledger``).

    Python methods here act as ICR's own staff would: grant credits, approve requests, and
    read balances for assertions. They change the same state the HTTP routes serve.
    """

    def __init__(self, emulator: ICREmulator) -> None:
        self._emulator = emulator
        self.reservation_ttl: float = RESERVATION_TTL
        """Seconds a new reservation holds its credits (change it before reserving)."""
        self.transactions: list[dict[str, Any]] = []
        """Every completed movement of credits, oldest first, as sent in webhooks."""
        self._ids = random.Random(f"ledger-ids-{emulator.seed}")
        self._catalog: dict[str, dict[str, Any]] = {}
        self._holdings: dict[str, dict[str, Decimal]] = {}
        self._addresses: dict[str, list[dict[str, Any]]] = {}
        self._address_owner: dict[str, str] = {}
        self._retirements: dict[str, list[dict[str, Any]]] = {}
        self._requests: dict[str, _Request] = {}
        self._reservations: dict[str, _Reservation] = {}

    # ------------------------------------------------------------------------ seeding

    def _ensure_catalog(self) -> None:
        if self._catalog:
            return
        rng = random.Random(f"ledger-credits-{self._emulator.seed}")
        # A fresh factory with the emulator's seed yields the very projects /projects serves,
        # without advancing the emulator's own random streams.
        for project in DataFactory(self._emulator.seed).projects()[:_CATALOG_SIZE]:
            credit_id = _uuid(rng)
            vintage = 2018 + rng.randrange(6)
            self._catalog[credit_id] = {
                "projectId": project["id"],
                "projectName": project["name"],
                "vintage": vintage,
                "serialNumber": f"ICR-{vintage}-{rng.randrange(10**8):08d}",
                "unit": "tCO2e",
            }

    def _ensure(self, organization_id: str) -> dict[str, Decimal]:
        """The organization's holdings, seeded the first time it is seen."""
        holdings = self._holdings.get(organization_id)
        if holdings is not None:
            return holdings
        org = self._emulator.organization(organization_id)  # KeyError for an unknown id
        self._ensure_catalog()
        rng = random.Random(f"ledger-org-{self._emulator.seed}-{organization_id}")
        first, second = rng.sample(sorted(self._catalog), 2)
        holdings = self._holdings[organization_id] = {
            first: Decimal(rng.choice((500, 1000, 2500))),
            second: Decimal(rng.randrange(50, 300)),
        }
        address_id = _uuid(rng)
        wallet = "icr1" + "".join(rng.choice("0123456789abcdef") for _ in range(38))
        address = {
            "id": address_id,
            "address": wallet,
            "name": "Primary",
            "isDefault": True,
            "createdAt": org.get("createdAt"),
        }
        self._addresses[organization_id] = [address]
        self._address_owner[wallet] = organization_id
        self._retirements[organization_id] = [
            self._retirement_record(
                organization_id,
                _uuid(rng),
                first,
                Decimal(10),
                {"reason": "Annual offsetting", "beneficiaryName": str(org.get("fullName"))},
                at=None,
                created=str(org.get("updatedAt") or org.get("createdAt")),
            )
        ]
        return holdings

    def _retirement_record(
        self,
        organization_id: str,
        retirement_id: str,
        credit_id: str,
        amount: Decimal,
        retirement_data: Mapping[str, Any],
        *,
        at: float | None,
        created: str | None = None,
    ) -> dict[str, Any]:
        meta = self._catalog.get(credit_id, {})
        record = {
            "id": retirement_id,
            "organizationId": organization_id,
            "creditId": credit_id,
            "amount": _num(amount),
            "projectId": meta.get("projectId"),
            "projectName": meta.get("projectName"),
            "vintage": meta.get("vintage"),
            "createdAt": created if at is None else iso(at),
        }
        record.update(retirement_data)
        return record

    # -------------------------------------------------------------------- Python API

    def grant_credits(
        self,
        organization_id: str,
        credit_id: str | None = None,
        amount: int | float | Decimal | str = 100,
        *,
        project_name: str | None = None,
        vintage: int | None = None,
    ) -> str:
        """Add ``amount`` of ``credit_id`` to an organization; return the credit id.

        ``credit_id=None`` (or an id the ledger does not know) creates a new credit batch.
        """
        holdings = self._ensure(organization_id)
        value = Decimal(str(amount))
        if not value.is_finite() or value <= 0:
            raise ValueError(f"amount must be positive, got {amount!r}")
        if credit_id is None:
            credit_id = _uuid(self._ids)
        if credit_id not in self._catalog:
            year = vintage if vintage is not None else 2022
            self._catalog[credit_id] = {
                "projectId": None,
                "projectName": project_name or "Emulator Test Project",
                "vintage": year,
                "serialNumber": f"ICR-{year}-{self._ids.randrange(10**8):08d}",
                "unit": "tCO2e",
            }
        holdings[credit_id] = holdings.get(credit_id, Decimal(0)) + value
        return credit_id

    def balance(self, organization_id: str, credit_id: str) -> Decimal:
        """What the organization holds of ``credit_id`` (reserved amounts included)."""
        return self._ensure(organization_id).get(credit_id, Decimal(0))

    def available(self, organization_id: str, credit_id: str) -> Decimal:
        """What the organization may still move: its balance minus active reservations."""
        return self.balance(organization_id, credit_id) - self._held(organization_id, credit_id)

    def holdings(self, organization_id: str) -> dict[str, Decimal]:
        """Every credit the organization holds, credit id → amount (a copy)."""
        return dict(self._ensure(organization_id))

    def addresses(self, organization_id: str) -> list[dict[str, Any]]:
        """The organization's addresses as served."""
        self._ensure(organization_id)
        return [dict(a) for a in self._addresses[organization_id]]

    def retirements(self, organization_id: str) -> list[dict[str, Any]]:
        """The organization's retirements as served, oldest first."""
        self._ensure(organization_id)
        return [dict(r) for r in self._retirements[organization_id]]

    def credit_request(self, request_id: str) -> dict[str, Any]:
        """One credit request as served (``KeyError`` if unknown)."""
        return self._requests[request_id].to_json()

    def reservation(self, reservation_id: str) -> dict[str, Any]:
        """One reservation as served, lapse applied (``KeyError`` if unknown)."""
        self._expire_lapsed()
        return self._reservations[reservation_id].to_json()

    def approve_request(self, request_id: str) -> dict[str, Any]:
        """Approve a pending credit request as the organization would: it is executed now.

        If the credits are no longer there the request ends ``failed`` (with
        ``failureReason``) instead. Returns the request as served.
        """
        req = self._pending(request_id)
        try:
            transaction = self._execute(
                req.organization_id,
                req.type,
                req.credit_id,
                req.amount,
                to_organization_id=req.to_organization_id,
                to_address=req.to_address,
                retirement_data=req.retirement_data,
                links={"creditRequestId": req.id},
            )
        except EmulatorHTTPError as error:
            req.status = "failed"
            req.failure_reason = str(error.message)
        else:
            req.status = "completed"
            req.transaction_id = transaction["id"]
        req.updated_at = self._emulator.server_now()
        return req.to_json()

    def reject_request(self, request_id: str) -> dict[str, Any]:
        """Reject a pending credit request; nothing moves. Returns the request as served."""
        req = self._pending(request_id)
        req.status = "rejected"
        req.updated_at = self._emulator.server_now()
        return req.to_json()

    def _pending(self, request_id: str) -> _Request:
        req = self._requests.get(request_id)
        if req is None:
            raise KeyError(f"unknown credit request {request_id!r}")
        if req.status != "pending":
            raise ValueError(f"credit request {request_id} is {req.status}, not pending")
        return req

    # ---------------------------------------------------------------------- mechanics

    def _new_id(self) -> str:
        return _uuid(self._ids)

    def _expire_lapsed(self) -> None:
        now = self._emulator.server_now()
        for reservation in self._reservations.values():
            if reservation.status == "active" and now >= reservation.expires_at:
                reservation.status = "expired"

    def _held(self, organization_id: str, credit_id: str) -> Decimal:
        self._expire_lapsed()
        return sum(
            (
                r.amount
                for r in self._reservations.values()
                if r.status == "active"
                and r.organization_id == organization_id
                and r.credit_id == credit_id
            ),
            Decimal(0),
        )

    def _check_available(self, organization_id: str, credit_id: str, amount: Decimal) -> None:
        self._ensure(organization_id)
        if credit_id not in self._catalog:
            raise EmulatorHTTPError(404, f"Credit {credit_id} not found")
        available = self.available(organization_id, credit_id)
        if amount > available:
            raise EmulatorHTTPError(
                409,
                f"Insufficient credits: requested {_num(amount)} of credit {credit_id}, "
                f"available {_num(available)}",
            )

    def _receiver(self, organization_id: str | None, address: str | None) -> str:
        if address is not None:
            owner = self._address_owner.get(address)
            if owner is None:
                raise EmulatorHTTPError(404, f"Address {address} not found")
            return owner
        assert organization_id is not None
        try:
            self._ensure(organization_id)
        except KeyError:
            raise EmulatorHTTPError(404, f"Organization {organization_id} not found") from None
        return organization_id

    def _execute(
        self,
        organization_id: str,
        action: str,
        credit_id: str,
        amount: Decimal,
        *,
        to_organization_id: str | None = None,
        to_address: str | None = None,
        retirement_data: Mapping[str, Any] | None = None,
        links: Mapping[str, Any] | None = None,
        released: _Reservation | None = None,
    ) -> dict[str, Any]:
        """Move or burn credits; return the transaction. Raises before changing anything."""
        receiver: str | None = None
        if action in ("transfer", "transfer_retire"):
            receiver = self._receiver(to_organization_id, to_address)
            if receiver == organization_id:
                raise EmulatorHTTPError(
                    400, "Credits cannot be transferred to the organization that holds them"
                )
        elif to_organization_id is not None or to_address is not None:
            receiver = self._receiver(to_organization_id, to_address)
        if released is not None:
            # The reservation's own hold covers the amount: release it, then move.
            released.status = "completed"
        self._check_available(organization_id, credit_id, amount)
        now = self._emulator.server_now()
        source = self._holdings[organization_id]
        source[credit_id] -= amount
        if not source[credit_id]:
            del source[credit_id]
        retirement_id = None
        if action in ("transfer", "transfer_retire"):
            assert receiver is not None
            target = self._holdings[receiver]
            target[credit_id] = target.get(credit_id, Decimal(0)) + amount
        if action in ("retire", "transfer_retire"):
            retired_at = receiver if action == "transfer_retire" else organization_id
            assert retired_at is not None
            if action == "transfer_retire":
                target = self._holdings[retired_at]
                target[credit_id] -= amount
                if not target[credit_id]:
                    del target[credit_id]
            retirement_id = self._new_id()
            self._retirements[retired_at].append(
                self._retirement_record(
                    retired_at, retirement_id, credit_id, amount, retirement_data or {}, at=now
                )
            )
        transaction: dict[str, Any] = {
            "id": self._new_id(),
            "type": action,
            "status": "completed",
            "creditId": credit_id,
            "amount": _num(amount),
            "fromOrganizationId": organization_id,
            "createdAt": iso(now),
        }
        if receiver is not None:
            transaction["toOrganizationId"] = receiver
        if to_address is not None:
            transaction["toAddress"] = to_address
        if retirement_id is not None:
            transaction["retirementId"] = retirement_id
        if links:
            transaction.update(links)
        self.transactions.append(transaction)
        event = "warehouseTransaction" if released is not None else "organizationTransaction"
        involved = [organization_id] + (
            [receiver] if receiver not in (None, organization_id) else []
        )
        self._emulator.webhooks.notify_transaction(event, transaction, involved)
        return transaction

    # ------------------------------------------------------------------------- routes

    def _authorize(
        self, request: web.Request, permission: str, *, write: bool = False
    ) -> tuple[str, str, str | None]:
        """Authenticate for the path's organization; return (org id, level, installation)."""
        org_id = request.match_info["organizationId"]
        record = self._emulator.authenticate_installation(request, org_id, permission)
        level = record.permissions[permission].upper()
        if (
            write
            and level not in _WRITE_LEVELS
            and not (permission == "organization_inventory" and level == "REQUEST")
        ):
            raise EmulatorHTTPError(403, f"Missing permission: {permission}:WRITE")
        self._ensure(org_id)
        return org_id, level, record.installation_id

    async def _addresses_route(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_info")
        return self._emulator.json_response(self._addresses[org_id])

    async def _retirements_route(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_info")
        return self._emulator.json_response(self._retirements[org_id])

    async def _retirement_pdf(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_info")
        wanted = request.match_info["retirementId"]
        for retirement in self._retirements[org_id]:
            if retirement["id"] == wanted:
                return web.Response(
                    body=certificate_pdf(retirement), content_type="application/pdf"
                )
        raise EmulatorHTTPError(404, f"Retirement {wanted} not found")

    def _credits_json(self, org_id: str) -> list[dict[str, Any]]:
        credits = []
        for credit_id, amount in self._holdings[org_id].items():
            held = self._held(org_id, credit_id)
            credits.append(
                {
                    "id": credit_id,
                    **self._catalog[credit_id],
                    "amount": _num(amount),
                    "reservedAmount": _num(held),
                    "availableAmount": _num(amount - held),
                    "status": "active",
                }
            )
        return credits

    async def _inventory(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_inventory")
        return self._emulator.json_response(
            {"credits": self._credits_json(org_id), "organizationId": org_id}
        )

    async def _warehouse_inventory(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_warehouse")
        return self._emulator.json_response(
            {"credits": self._credits_json(org_id), "organizationId": org_id}
        )

    async def _list_requests(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_inventory")
        items = [r for r in self._requests.values() if r.organization_id == org_id]
        return self._emulator.paginated_response(
            request, "creditRequests", items, lambda r: r.to_json()
        )

    async def _get_request(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_inventory")
        req = self._requests.get(request.match_info["requestId"])
        if req is None or req.organization_id != org_id:
            raise EmulatorHTTPError(404, "Credit request not found")
        return self._emulator.json_response(req.to_json())

    async def _credit_action(self, request: web.Request) -> web.StreamResponse:
        action = request.match_info["action"]
        if action not in CREDIT_ACTIONS:
            raise EmulatorHTTPError(404, f"Cannot POST {request.path}")
        org_id, level, installation_id = self._authorize(
            request, "organization_inventory", write=True
        )
        body = await self._emulator.read_json_object(request)
        fields = _validate_credit_action(action, body)
        credit_id, amount = fields["creditId"], fields["amount"]
        now = self._emulator.server_now()
        req = _Request(
            id=self._new_id(),
            type=action,
            status="pending",
            organization_id=org_id,
            installation_id=installation_id,
            credit_id=credit_id,
            amount=amount,
            to_organization_id=fields.get("toOrganizationId"),
            to_address=fields.get("toAddress"),
            retirement_data=fields.get("retirementData"),
            created_at=now,
            updated_at=now,
        )
        if level == "REQUEST":
            # Checked now so an impossible request fails at once, executed on approval.
            self._check_available(org_id, credit_id, amount)
            if req.to_organization_id is not None or req.to_address is not None:
                self._receiver(req.to_organization_id, req.to_address)
        else:
            transaction = self._execute(
                org_id,
                action,
                credit_id,
                amount,
                to_organization_id=req.to_organization_id,
                to_address=req.to_address,
                retirement_data=req.retirement_data,
                links={"creditRequestId": req.id},
            )
            req.status = "completed"
            req.transaction_id = transaction["id"]
        self._requests[req.id] = req
        return self._emulator.json_response(req.to_json(), status=201)

    def _own_reservation(self, request: web.Request, org_id: str) -> _Reservation:
        self._expire_lapsed()
        reservation = self._reservations.get(request.match_info["reservationId"])
        if reservation is None or reservation.organization_id != org_id:
            raise EmulatorHTTPError(404, "Reservation not found")
        if reservation.status != "active":
            raise EmulatorHTTPError(409, f"Reservation is {reservation.status}")
        return reservation

    async def _list_reservations(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_warehouse")
        self._expire_lapsed()
        items = [r for r in self._reservations.values() if r.organization_id == org_id]
        return self._emulator.paginated_response(
            request, "reservations", items, lambda r: r.to_json()
        )

    async def _create_reservation(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_warehouse", write=True)
        body = await self._emulator.read_json_object(request)
        errors: list[str] = []
        credit_id = _string(body, "creditId", errors)
        owner = _string(body, "organizationId", errors)
        amount = _amount(body, errors)
        if errors:
            raise EmulatorHTTPError(400, errors)
        assert credit_id is not None
        assert owner is not None
        assert amount is not None
        if owner != org_id:
            raise EmulatorHTTPError(403, "Cannot reserve credits of another organization")
        self._check_available(org_id, credit_id, amount)
        now = self._emulator.server_now()
        reservation = _Reservation(
            id=self._new_id(),
            credit_id=credit_id,
            organization_id=org_id,
            amount=amount,
            created_at=now,
            expires_at=now + self.reservation_ttl,
        )
        self._reservations[reservation.id] = reservation
        return self._emulator.json_response(reservation.to_json(), status=201)

    async def _finish_reservation(self, request: web.Request) -> web.StreamResponse:
        action = request.match_info["action"]
        if action not in RESERVATION_ACTIONS:
            raise EmulatorHTTPError(404, f"Cannot POST {request.path}")
        org_id, _, _ = self._authorize(request, "organization_warehouse", write=True)
        reservation = self._own_reservation(request, org_id)
        body = await self._emulator.read_json_object(request)
        errors: list[str] = []
        receiver = _string(body, "receiverId", errors)
        retirement = _retirement_data(body, errors, required=action != "transfer")
        if errors:
            raise EmulatorHTTPError(400, errors)
        assert receiver is not None
        self._receiver(receiver, None)  # 404 before anything changes
        try:
            transaction = self._execute(
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
        reservation.finished_at = self._emulator.server_now()
        reservation.transaction_id = transaction["id"]
        return self._emulator.json_response(reservation.to_json(), status=201)

    async def _cancel_reservation(self, request: web.Request) -> web.StreamResponse:
        org_id, _, _ = self._authorize(request, "organization_warehouse", write=True)
        reservation = self._own_reservation(request, org_id)
        reservation.status = "cancelled"
        reservation.finished_at = self._emulator.server_now()
        return self._emulator.json_response(reservation.to_json())


# ----------------------------------------------------------------------------- validation


def _string(body: Mapping[str, Any], name: str, errors: list[str]) -> str | None:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        errors.append(f"{name} must be a non-empty string")
        return None
    return value


def _amount(body: Mapping[str, Any], errors: list[str]) -> Decimal | None:
    value = body.get("amount")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        errors.append("amount must be a positive number")
        return None
    try:
        amount = Decimal(str(value))
    except decimal.InvalidOperation:
        amount = Decimal(0)
    if not amount.is_finite() or amount <= 0 or amount > _MAX_AMOUNT:
        errors.append("amount must be a positive number")
        return None
    return amount


def _retirement_data(
    body: Mapping[str, Any], errors: list[str], *, required: bool
) -> dict[str, Any] | None:
    data = body.get("retirementData")
    if data is None:
        if required:
            errors.append("retirementData must be an object")
        return None
    if not isinstance(data, dict):
        errors.append("retirementData must be an object")
        return None
    out: dict[str, Any] = {}
    for name in ("reason", "beneficiaryName"):
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            errors.append(f"retirementData.{name} must be a non-empty string")
        else:
            out[name] = value
    comment = data.get("comment")
    if comment is not None:
        if not isinstance(comment, str):
            errors.append("retirementData.comment must be a string")
        else:
            out["comment"] = comment
    return out


def _validate_credit_action(action: str, body: Mapping[str, Any]) -> dict[str, Any]:
    errors: list[str] = []
    out: dict[str, Any] = {
        "creditId": _string(body, "creditId", errors),
        "amount": _amount(body, errors),
    }
    targets = 0
    for name in ("toOrganizationId", "toAddress"):
        if body.get(name) is not None:
            targets += 1
            out[name] = _string(body, name, errors)
    if targets > 1:
        errors.append("only one of toOrganizationId and toAddress may be given")
    if action in ("transfer", "transfer_retire") and targets == 0:
        errors.append("toOrganizationId or toAddress must be given")
    retirement = _retirement_data(body, errors, required=action in ("retire", "transfer_retire"))
    if retirement is not None:
        out["retirementData"] = retirement
    if errors:
        raise EmulatorHTTPError(400, errors)
    return out


# ---------------------------------------------------------------------------------- PDF


def _pdf_text(value: object) -> str:
    text = str(value).encode("latin-1", "replace").decode("latin-1")
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def certificate_pdf(retirement: Mapping[str, Any]) -> bytes:
    """A small, valid one-page PDF certificate for a retirement record."""
    lines = [
        "ICR emulator - retirement certificate",
        f"Retirement {retirement.get('id')}",
        f"{retirement.get('amount')} tCO2e of credit {retirement.get('creditId')}",
        f"Project: {retirement.get('projectName')}",
        f"Beneficiary: {retirement.get('beneficiaryName')}",
        f"Reason: {retirement.get('reason')}",
        f"Date: {retirement.get('createdAt')}",
    ]
    ops = ["BT", "/F1 12 Tf", "72 770 Td", "16 TL"]
    ops += [f"({_pdf_text(line)}) '" for line in lines]
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


# ------------------------------------------------------------------------------- routes


def register_routes(emulator: ICREmulator, app: web.Application) -> None:
    """Add the ledger's routes to an emulator application (an ``EXTRA_ROUTE_REGISTRARS``
    entry)."""
    ledger = emulator.ledger
    org = "/organizations/{organizationId}"
    router = app.router
    router.add_get(
        f"{org}/addresses", ledger._addresses_route, name="list_addresses", allow_head=False
    )
    router.add_get(
        f"{org}/retirements", ledger._retirements_route, name="list_retirements", allow_head=False
    )
    router.add_get(
        f"{org}/retirements/{{retirementId}}/pdf",
        ledger._retirement_pdf,
        name="get_retirement_pdf",
        allow_head=False,
    )
    router.add_get(f"{org}/inventory", ledger._inventory, name="get_inventory", allow_head=False)
    router.add_get(
        f"{org}/inventory/requests",
        ledger._list_requests,
        name="list_credit_requests",
        allow_head=False,
    )
    router.add_get(
        f"{org}/inventory/requests/{{requestId}}",
        ledger._get_request,
        name="get_credit_request",
        allow_head=False,
    )
    router.add_post(
        f"{org}/inventory/requests/{{action}}", ledger._credit_action, name="create_credit_action"
    )
    router.add_get(
        f"{org}/warehouse/inventory",
        ledger._warehouse_inventory,
        name="get_warehouse_inventory",
        allow_head=False,
    )
    router.add_get(
        f"{org}/warehouse/reservations",
        ledger._list_reservations,
        name="list_reservations",
        allow_head=False,
    )
    router.add_post(
        f"{org}/warehouse/reservations", ledger._create_reservation, name="create_reservation"
    )
    router.add_post(
        f"{org}/warehouse/reservations/{{reservationId}}/{{action}}",
        ledger._finish_reservation,
        name="finish_reservation",
    )
    router.add_delete(
        f"{org}/warehouse/reservations/{{reservationId}}",
        ledger._cancel_reservation,
        name="cancel_reservation",
    )


if register_routes not in EXTRA_ROUTE_REGISTRARS:
    EXTRA_ROUTE_REGISTRARS.append(register_routes)
