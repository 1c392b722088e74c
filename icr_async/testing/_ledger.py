"""The emulator's in-memory ledger: organizations' credits, credit requests, warehouse
reservations and retirements, served under ICR's exact paths (shared/docs/icr-api.md):
``/organizations/{id}/inventory[/requests...]``, ``/warehouse/inventory[/reservations...]``,
``/retirements[/{id}/pdf]`` and ``/addresses`` (the routes are in ``_ledger_routes.py``).
Objects have ICR's documented shapes (``_ledger_records.py``).

The rules it enforces (the emulator's reading where ICR's docs are silent):

* Permissions come from the installation token. Reads need the permission at any level
  (``organization_info`` for addresses and retirements, ``organization_inventory`` for the
  inventory and credit requests, ``organization_warehouse`` for the warehouse). A credit
  action with ``organization_inventory: WRITE`` is done at once (state ``Completed``, with a
  ``txId``); with ``REQUEST`` it becomes a ``Pending`` credit request until
  :meth:`Ledger.approve_request` (``Completed`` or ``Failed``) or :meth:`Ledger.reject_request`
  (``Rejected``); any other level is a 403. Reservations need ``organization_warehouse:
  WRITE``.
* Balances are real: a transfer moves credits to the receiving organization, a retire or a
  cancel burns them, ``transfer_retire`` moves then burns them in the receiver's name. The
  inventory's ``amount`` is the balance; the warehouse's ``amount`` is what may still be
  reserved (balance minus active reservations). Asking for more than that is a **409**; a
  malformed body is a 400 with class-validator style messages; an unknown credit,
  organization, address, request or reservation is a 404.
* A reservation holds its amount until ``reservedToDate``, :attr:`Ledger.reservation_ttl`
  (600) seconds of emulator time after it was made (``server_now()``, so a shared
  ``ManualClock`` makes it lapse); a lapsed one stays listed with ``isComplete: false``, its
  amount free again, and finishing or cancelling it is a 409. A finished one has
  ``isComplete: true``; a cancelled one is no longer listed (404 afterwards).
* Every organization starts, the first time the ledger sees it, with two credit holdings,
  one address and one past retirement, all derived from the emulator's seed and the
  organization's id (the same on every run). Credit ids look like ICR's:
  ``{type}-{tokenId}-{tokenAddress}``.
* Completed credit actions deliver ``organizationTransaction`` webhooks, finished
  reservations ``warehouseTransaction`` webhooks, to the installations of every organization
  involved (see ``emulator.webhooks``). A transaction names the ``action`` and, like every
  other object, the credit's ``type``, ``serialization``, ``tokenId`` and ``project``.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Protocol

from ._data import DataFactory, iso
from ._http import EmulatorHTTPError
from ._ledger_records import (
    CreditMeta,
    RequestRecord,
    ReservationRecord,
    RetirementRecord,
    certificate_pdf,
    num,
)

if TYPE_CHECKING:
    from ._webhook_delivery import WebhookSender

__all__ = ["RESERVATION_TTL", "Ledger", "LedgerHost", "certificate_pdf"]

RESERVATION_TTL: Final = 600.0
"""Seconds a warehouse reservation holds its credits."""

_CATALOG_SIZE: Final = 6
_HEX: Final = "0123456789abcdef"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _hex(rng: random.Random, digits: int) -> str:
    return "0x" + "".join(rng.choice(_HEX) for _ in range(digits))


class LedgerHost(Protocol):
    """What the ledger needs of the emulator that owns it (typed by use, so the emulator's
    module may import this one without this one importing it back)."""

    @property
    def seed(self) -> int: ...

    @property
    def webhooks(self) -> WebhookSender: ...

    def organization(self, organization_id: str) -> dict[str, Any]:
        """The stored organization object (live; ``KeyError`` for an unknown id)."""

    def server_now(self) -> float:
        """The server's current time: ``clock() + clock_offset``."""


class Ledger:
    """The credits of every organization the emulator knows (``emulator.ledger``).

    Python methods here act as ICR's own staff would: grant credits, approve requests, and
    read balances for assertions. They change the same state the HTTP routes serve, and
    return objects exactly as the routes serve them.
    """

    def __init__(self, emulator: LedgerHost) -> None:
        self._emulator = emulator
        self.reservation_ttl: float = RESERVATION_TTL
        """Seconds a new reservation holds its credits (change it before reserving)."""
        self.transactions: list[dict[str, Any]] = []
        """Every completed movement of credits, oldest first, as sent in webhooks."""
        self.executions: Counter[tuple[str, ...]] = Counter()
        """How many times each distinct action was executed, keyed by :meth:`action_key`:
        a count above 1 is the same action done twice (see :attr:`duplicate_executions`)."""
        self._ids = random.Random(f"ledger-ids-{emulator.seed}")
        self._catalog: dict[str, CreditMeta] = {}
        self._seed_credits: list[str] = []
        self._holdings: dict[str, dict[str, Decimal]] = {}
        self._addresses: dict[str, list[dict[str, Any]]] = {}
        self._address_owner: dict[str, str] = {}
        self._retirements: dict[str, list[RetirementRecord]] = {}
        self._requests: dict[str, RequestRecord] = {}
        self._reservations: dict[str, ReservationRecord] = {}

    # ------------------------------------------------------------------------ seeding

    def _new_meta(
        self,
        rng: random.Random,
        *,
        project: dict[str, Any],
        vintage: int,
        credit_type: str,
        supply: Decimal,
        credit_id: str | None = None,
        country: str = "XX",
    ) -> CreditMeta:
        token_id = str(rng.randrange(1, 100))
        token_address = _hex(rng, 40)
        return CreditMeta(
            credit_id=credit_id or f"{credit_type}-{token_id}-{token_address}",
            token_id=token_id,
            token_address=token_address,
            type=credit_type,
            serialization=f"ICR-{country}-{vintage}-{token_id}-{rng.randrange(10**6):06d}",
            supply=supply,
            project=project,
            vintage=vintage,
        )

    def _ensure_catalog(self) -> None:
        if self._catalog:
            return
        rng = random.Random(f"ledger-credits-{self._emulator.seed}")
        # A fresh factory with the emulator's seed yields the very projects /projects serves,
        # without advancing the emulator's own random streams.
        for project in DataFactory(self._emulator.seed).projects()[:_CATALOG_SIZE]:
            meta = self._new_meta(
                rng,
                project={"id": project["id"], "fullName": project["name"]},
                vintage=2018 + rng.randrange(6),
                credit_type="exAnte" if rng.random() < 0.25 else "exPost",
                supply=Decimal(rng.choice((50_000, 100_000, 250_000))),
                country=str(project.get("country") or "XX"),
            )
            self._catalog[meta.credit_id] = meta
            self._seed_credits.append(meta.credit_id)

    def _ensure(self, organization_id: str) -> dict[str, Decimal]:
        """The organization's holdings, seeded the first time it is seen."""
        holdings = self._holdings.get(organization_id)
        if holdings is not None:
            return holdings
        org = self._emulator.organization(organization_id)  # KeyError for an unknown id
        self._ensure_catalog()
        rng = random.Random(f"ledger-org-{self._emulator.seed}-{organization_id}")
        # Only the seeded credits: an organization first seen after grant_credits() must not
        # start with credits a test granted to someone else.
        first, second = rng.sample(self._seed_credits, 2)
        holdings = self._holdings[organization_id] = {
            first: Decimal(rng.choice((500, 1000, 2500))),
            second: Decimal(rng.randrange(50, 300)),
        }
        address_id = _uuid(rng)
        wallet = "icr1" + "".join(rng.choice(_HEX) for _ in range(38))
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
            RetirementRecord(
                id=_uuid(rng),
                organization_id=organization_id,
                credit_id=first,
                amount=Decimal(10),
                reason="Annual offsetting",
                comment=None,
                beneficiary=str(org.get("fullName")),
                created_at=str(org.get("updatedAt") or org.get("createdAt")),
            )
        ]
        return holdings

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
        """Add ``amount`` of ``credit_id`` to an organization (minting it: the credit's
        ``supply`` grows too); return the credit id.

        ``credit_id=None`` (or an id the ledger does not know) creates a new credit batch.
        """
        holdings = self._ensure(organization_id)
        value = Decimal(str(amount))
        if not value.is_finite() or value <= 0:
            raise ValueError(f"amount must be positive, got {amount!r}")
        meta = self._catalog.get(credit_id) if credit_id is not None else None
        if meta is None:
            meta = self._new_meta(
                self._ids,
                project={"id": _uuid(self._ids), "fullName": project_name or "Emulator Project"},
                vintage=vintage if vintage is not None else 2022,
                credit_type="exPost",
                supply=Decimal(0),
                credit_id=credit_id,
            )
            self._catalog[meta.credit_id] = meta
        meta.supply += value
        holdings[meta.credit_id] = holdings.get(meta.credit_id, Decimal(0)) + value
        return meta.credit_id

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
        return [self._retirement_json(r) for r in self._retirements[organization_id]]

    def credit_request(self, request_id: str) -> dict[str, Any]:
        """One credit request as served (``KeyError`` if unknown)."""
        return self._request_json(self._requests[request_id])

    def reservation(self, reservation_id: str) -> dict[str, Any]:
        """One reservation as served, lapse applied (``KeyError`` if unknown)."""
        self._expire_lapsed()
        return self._reservation_json(self._reservations[reservation_id])

    def reservation_status(self, reservation_id: str) -> str:
        """The emulator's own word for a reservation's state, which ICR's object does not
        carry: ``active``, ``completed``, ``cancelled`` or ``expired``."""
        self._expire_lapsed()
        return self._reservations[reservation_id].status

    def request_failure(self, request_id: str) -> str | None:
        """Why an approved request ended ``Failed`` (``None`` otherwise)."""
        return self._requests[request_id].failure_reason

    def approve_request(self, request_id: str) -> dict[str, Any]:
        """Approve a pending credit request as the organization would: it is executed now.

        If the credits are no longer there the request ends ``Failed`` (see
        :meth:`request_failure`) instead. Returns the request as served.
        """
        req = self._pending(request_id)
        try:
            transaction = self._execute(
                req.organization_id,
                req.action,
                req.credit_id,
                req.amount,
                to_organization_id=req.to_organization_id,
                to_address=req.to_address,
                retirement_data=req.retirement_data,
                links={"creditRequestId": req.id},
            )
        except EmulatorHTTPError as error:
            req.state = "Failed"
            req.failure_reason = str(error.message)
        else:
            req.state = "Completed"
            req.tx_id = transaction["txId"]
        req.updated_at = self._emulator.server_now()
        return self._request_json(req)

    def reject_request(self, request_id: str) -> dict[str, Any]:
        """Reject a pending credit request; nothing moves. Returns the request as served."""
        req = self._pending(request_id)
        req.state = "Rejected"
        req.updated_at = self._emulator.server_now()
        return self._request_json(req)

    def _pending(self, request_id: str) -> RequestRecord:
        req = self._requests.get(request_id)
        if req is None:
            raise KeyError(f"unknown credit request {request_id!r}")
        if req.state != "Pending":
            raise ValueError(f"credit request {request_id} is {req.state}, not pending")
        return req

    # ---------------------------------------------------------------------- rendering

    def _retirement_json(self, record: RetirementRecord) -> dict[str, Any]:
        return record.to_json(self._catalog[record.credit_id])

    def _request_json(self, record: RequestRecord) -> dict[str, Any]:
        return record.to_json(self._catalog[record.credit_id])

    def _reservation_json(self, record: ReservationRecord) -> dict[str, Any]:
        return record.to_json(self._catalog[record.credit_id])

    def _inventory_id(self, organization_id: str, credit_id: str) -> str:
        # Stable whatever the order of calls: derived from the seed and the pair alone.
        name = f"icr-emulator:{self._emulator.seed}:{organization_id}:{credit_id}"
        return str(uuid.uuid5(uuid.NAMESPACE_URL, name))

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
                f"Insufficient credits: requested {num(amount)} of credit {credit_id}, "
                f"available {num(available)}",
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

    @staticmethod
    def action_key(
        organization_id: str,
        action: str,
        credit_id: str,
        amount: Any,
        *,
        receiver: str | None = None,
        retirement_data: Mapping[str, Any] | None = None,
    ) -> tuple[str, ...]:
        """What tells one executed action from another in :attr:`executions`: the source
        organization, the action, the credit, the amount, the receiver and the retirement
        data (a distinct ``comment`` per order makes every order's action distinct). A
        finished reservation's receiver reads ``RECEIVER@RESERVATION_ID``."""
        data = json.dumps(dict(retirement_data or {}), sort_keys=True, default=str)
        return (
            organization_id,
            action,
            credit_id,
            str(num(Decimal(str(amount)))),
            receiver or "",
            data,
        )

    def times_executed(
        self, organization_id: str, action: str, credit_id: str, amount: Any, **kw: Any
    ) -> int:
        """How many times this action (see :meth:`action_key`) was executed."""
        return self.executions[self.action_key(organization_id, action, credit_id, amount, **kw)]

    @property
    def duplicate_executions(self) -> int:
        """Executions that repeated an earlier identical action (0 for a well-behaved client)."""
        return sum(n - 1 for n in self.executions.values() if n > 1)

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
        released: ReservationRecord | None = None,
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
            data = retirement_data or {}
            self._retirements[retired_at].append(
                RetirementRecord(
                    id=retirement_id,
                    organization_id=retired_at,
                    credit_id=credit_id,
                    amount=amount,
                    reason=data.get("reason"),
                    comment=data.get("comment"),
                    beneficiary=data.get("beneficiaryName"),
                    created_at=iso(now),
                )
            )
        meta = self._catalog[credit_id]
        transaction: dict[str, Any] = {
            "id": self._new_id(),
            "txId": _hex(self._ids, 64),
            "action": action,
            "type": meta.type,
            "creditId": credit_id,
            "tokenId": meta.token_id,
            "tokenAddress": meta.token_address,
            "serialization": meta.serialization,
            "project": dict(meta.project),
            "amount": num(amount),
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
        self.executions[
            self.action_key(
                organization_id,
                action,
                credit_id,
                amount,
                receiver=receiver if released is None else f"{receiver}@{released.id}",
                retirement_data=retirement_data,
            )
        ] += 1
        event = "warehouseTransaction" if released is not None else "organizationTransaction"
        involved = [organization_id] + (
            [receiver] if receiver not in (None, organization_id) else []
        )
        self._emulator.webhooks.notify_transaction(event, transaction, involved)
        return transaction
